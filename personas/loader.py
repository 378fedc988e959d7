"""Reading YAML files of the persona store, with errors that name the file, the field and the reason."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from personas.schema import Persona

_KINDS = {
    type(None): "an empty file",
    list: "a list",
    str: "plain text",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


Document = TypeVar("Document", bound=BaseModel)

MAX_FILE_BYTES = 256 * 1024  # a line's role is at most 6000 characters: a larger file is a mistake or an attack


class PersonaError(Exception):
    """A file of the persona store that cannot be read or is not valid; the message is one line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names a key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {first.start_mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)


def load_persona(path: Path) -> Persona:
    return load_document(path, Persona, "persona")


def load_document(path: Path, schema: type[Document], kind: str) -> Document:
    """The YAML mapping in `path` validated as `schema`; `kind` names it in errors ("persona").

    Whatever the file holds, the only error raised is PersonaError: a file nested thousands deep
    (RecursionError), a FIFO that would block the reader, a file of gigabytes (refused unread)."""
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise PersonaError(f"{path}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise PersonaError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PersonaError(f"{path}: cannot read: {error}") from error
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise PersonaError(f"{path}: {_yaml_reason(error)}") from error
    except RecursionError:
        raise PersonaError(f"{path}: invalid YAML: nested too deep") from None
    except Exception as error:  # the parser's bug on hostile input stays this file's problem
        raise PersonaError(f"{path}: invalid YAML: {type(error).__name__}") from error
    if not isinstance(document, dict):
        raise PersonaError(f"{path}: expected a mapping of {kind} fields, got {_kind(document)}")
    try:
        return schema.model_validate(document)
    except ValidationError as error:
        raise PersonaError(f"{path}: {validation_reasons(error, kind)}") from error
    except RecursionError:
        raise PersonaError(f"{path}: nested too deep") from None


def validation_reasons(error: ValidationError, kind: str) -> str:
    """One line: `field: reason` for each error, `;`-separated; `kind` names the whole document."""
    return "; ".join(_field_reason(detail, kind) for detail in error.errors())


def _kind(document: object) -> str:
    return _KINDS.get(type(document), type(document).__name__)


def _yaml_reason(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}invalid YAML: {problem}"


def _field_reason(detail: ErrorDetails, kind: str) -> str:
    field = ".".join(str(part) for part in detail["loc"]) or kind
    return f"{field}: {_reason(detail)}"


def _reason(detail: ErrorDetails) -> str:
    ctx = detail.get("ctx", {})
    match detail["type"]:
        case "missing":
            return "required"
        case "extra_forbidden":
            return "unknown field"
        case "greater_than_equal":
            return f"must be >= {ctx['ge']}"
        case "greater_than":
            return f"must be > {ctx['gt']}"
        case "less_than_equal":
            return f"must be <= {ctx['le']}"
        case "less_than":
            return f"must be < {ctx['lt']}"
        case "string_too_short":
            return "must not be empty"
        case "value_error":
            return str(ctx["error"])
        case _:
            return detail["msg"]
