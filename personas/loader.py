"""Reading one persona YAML file, with errors that name the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError
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


class PersonaError(Exception):
    """A persona file that cannot be read or is not a valid persona; the message is one line."""


def load_persona(path: Path) -> Persona:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PersonaError(f"{path}: cannot read: {error}") from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PersonaError(f"{path}: {_yaml_reason(error)}") from error
    if not isinstance(document, dict):
        kind = _KINDS.get(type(document), type(document).__name__)
        raise PersonaError(f"{path}: expected a mapping of persona fields, got {kind}")
    try:
        return Persona.model_validate(document)
    except ValidationError as error:
        reasons = "; ".join(_field_reason(detail) for detail in error.errors())
        raise PersonaError(f"{path}: {reasons}") from error


def _yaml_reason(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}invalid YAML: {problem}"


def _field_reason(detail: ErrorDetails) -> str:
    field = ".".join(str(part) for part in detail["loc"]) or "persona"
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
