"""A tenant's lines and their personas. Writes are checked, saved atomically and live at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from personas.schema import Persona
from personas.store import TenantEntry, UnknownLine
from personas.tenant import ID_PATTERN, Line
from telephony.control.api.deps import ControlPlaneDep, TenantDep
from telephony.control.api.models import LineCreate, LinePublic, LineValidation
from telephony.control.control_plane import ControlPlane

router = APIRouter(prefix="/tenants/{tenant}/lines", tags=["lines"])

LineId = Annotated[str, Path(pattern=ID_PATTERN.pattern)]


def _line(entry: TenantEntry, line_id: str) -> Line:
    if line_id not in entry.lines:
        raise UnknownLine(f"no line {line_id!r}")
    return entry.lines[line_id]


def _saved(control_plane: ControlPlane, tenant_id: str, line_id: str) -> LinePublic:
    entry = control_plane.store.catalog.tenants[tenant_id]
    return LinePublic.of(tenant_id, line_id, _line(entry, line_id))


@router.get("", response_model=list[LinePublic])
def list_lines(entry: TenantDep) -> list[LinePublic]:
    return [LinePublic.of(entry.id, line_id, line) for line_id, line in entry.lines.items()]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=LinePublic,
             responses={409: {"description": "the line exists"}, 422: {"description": "invalid line"}})
def create_line(body: LineCreate, entry: TenantDep, control_plane: ControlPlaneDep) -> LinePublic:
    line = Line.model_validate(body.model_dump(exclude={"id"}))
    control_plane.store.save_line(entry.id, body.id, line, create=True)
    return _saved(control_plane, entry.id, body.id)


@router.get("/{line}", response_model=LinePublic)
def read_line(line: LineId, entry: TenantDep) -> LinePublic:
    return LinePublic.of(entry.id, line, _line(entry, line))


@router.put("/{line}", response_model=LinePublic, responses={422: {"description": "invalid line"}})
def replace_line(line: LineId, body: Line, entry: TenantDep, control_plane: ControlPlaneDep) -> LinePublic:
    """Replace a line; calls in progress keep the persona they started with."""
    control_plane.store.save_line(entry.id, line, body, create=False)
    return _saved(control_plane, entry.id, line)


@router.delete("/{line}", status_code=status.HTTP_204_NO_CONTENT)
def delete_line(line: LineId, entry: TenantDep, control_plane: ControlPlaneDep) -> Response:
    control_plane.store.delete_line(entry.id, line)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{line}/validate", response_model=LineValidation, responses={422: {"description": "invalid line"}})
def validate_line(line: LineId, body: Line, entry: TenantDep, control_plane: ControlPlaneDep) -> LineValidation:
    """Check a line as a create or replace of `line` would, without saving it."""
    control_plane.store.check_line(entry.id, line, body)
    return LineValidation(line=LinePublic.of(entry.id, line, body))


@router.get("/{line}/persona", response_model=Persona, tags=["personas"])
def read_persona(line: LineId, entry: TenantDep) -> Persona:
    return _line(entry, line).persona


@router.put("/{line}/persona", response_model=Persona, tags=["personas"])
def replace_persona(line: LineId, body: Persona, entry: TenantDep, control_plane: ControlPlaneDep) -> Persona:
    updated = _line(entry, line).model_copy(update={"persona": body})
    control_plane.store.save_line(entry.id, line, updated, create=False)
    return _saved(control_plane, entry.id, line).persona
