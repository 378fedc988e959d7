"""Writing a YAML document over the file it replaces, keeping the comments and layout of what stays.

The old file is read in ruamel.yaml's round-trip mode and the new document merged into it: keys that
keep their value keep their comments, quotes and style; changed values are replaced, keys no longer
present removed. Long text is written folded at `WIDTH` columns. The files are read by PyYAML
(YAML 1.1, where `yes` is a boolean) and ruamel.yaml writes YAML 1.2: if the text written would not
read back as `document`, the document is written plainly instead, without the old file's comments.
"""

from __future__ import annotations

import io
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

WIDTH = 100


def updated_yaml(old_text: str | None, document: dict[str, Any]) -> str:
    """The text of `document`, as `old_text` (a YAML mapping, or None for a new file) with its changes."""
    rt = YAML()  # round-trip mode
    rt.preserve_quotes = True
    rt.width = WIDTH
    rt.indent(mapping=2, sequence=4, offset=2)
    old = rt.load(old_text) if old_text else None
    if not isinstance(old, CommentedMap):
        old = CommentedMap()
    _merge(old, document)
    out = io.StringIO()
    rt.dump(old, out)
    text = out.getvalue()
    if yaml.safe_load(text) != document:
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=WIDTH)
    return text


def _merge(old: CommentedMap, new: dict[str, Any]) -> None:
    for key in [k for k in old if k not in new]:
        del old[key]
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), CommentedMap):
            _merge(old[key], value)
        elif key not in old or old[key] != value:
            old[key] = _styled(value)


def _styled(value: Any) -> Any:
    """Long or multi-line text as a block scalar, so the file stays readable."""
    if not isinstance(value, str) or len(value) <= WIDTH - 20:
        return value
    if "\n" in value or value != value.strip() or "  " in value:
        return LiteralScalarString(value)
    folded = FoldedScalarString(value)
    folded.fold_pos = _fold_positions(value, WIDTH - 6)
    return folded


def _fold_positions(text: str, width: int) -> list[int]:
    """Indexes of the spaces to break at so that no line is longer than `width` (where words allow)."""
    positions, start, last_space = [], 0, -1
    for i, char in enumerate(text):
        if char == " ":
            last_space = i
        if i - start >= width and last_space > start:
            positions.append(last_space)
            start = last_space + 1
    return positions
