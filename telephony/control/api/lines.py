"""A tenant's lines and their personas. Writes are checked, saved atomically and live at once.

A line and its persona share one version, the line file's (`ETag`); a PUT with `If-Match` is
refused with 412 if the file changed since, and the answer holds the version now in service.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Response, status
from fastapi.responses import JSONResponse

from personas.schema import Persona
from personas.store import InvalidLine, LineProblem, TenantEntry, UnknownLine, VersionConflict
from personas.tenant import ID_PATTERN, Line
from telephony.control.api.deps import ControlPlaneDep, TenantDep
from telephony.control.api.models import LineCreate, LinePublic, LineValidation
from telephony.control.control_plane import ControlPlane

router = APIRouter(prefix="/tenants/{tenant}/lines", tags=["lines"])

LineId = Annotated[str, Path(pattern=ID_PATTERN.pattern)]
IfMatch = Annotated[str | None, Header(description="the ETag of the version read: refused (412) if the "
                                                   "line changed since")]
CONFLICT = {412: {"description": "the line changed since the version in If-Match: `current` holds it now "
                                 "(null if the file does not load), the ETag header its version"}}


def _etag(version: str | None) -> dict[str, str]:
    return {"ETag": f'"{version}"'} if version else {}


def _unquoted(if_match: str | None) -> str | None:
    return if_match.strip().removeprefix("W/").strip('"') if if_match is not None else None


def _conflict(error: VersionConflict, current: dict | None) -> JSONResponse:
    return JSONResponse({"detail": str(error), "current": current}, status_code=status.HTTP_412_PRECONDITION_FAILED,
                        headers=_etag(error.version))


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
def read_line(line: LineId, entry: TenantDep, control_plane: ControlPlaneDep, response: Response) -> LinePublic:
    found = _line(entry, line)
    response.headers.update(_etag(control_plane.store.line_version(entry.id, line)))
    return LinePublic.of(entry.id, line, found)


@router.put("/{line}", response_model=LinePublic, responses={422: {"description": "invalid line"}, **CONFLICT})
def replace_line(line: LineId, body: Line, entry: TenantDep, control_plane: ControlPlaneDep, response: Response,
                 if_match: IfMatch = None) -> LinePublic | JSONResponse:
    """Replace a line; calls in progress keep the persona they started with."""
    try:
        version = control_plane.store.save_line(entry.id, line, body, create=False, if_match=_unquoted(if_match))
    except VersionConflict as error:
        current = LinePublic.of(entry.id, line, error.current).model_dump(mode="json") if error.current else None
        return _conflict(error, current)
    response.headers.update(_etag(version))
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
def read_persona(line: LineId, entry: TenantDep, control_plane: ControlPlaneDep, response: Response) -> Persona:
    found = _line(entry, line)
    response.headers.update(_etag(control_plane.store.line_version(entry.id, line)))
    return found.persona


@router.put("/{line}/persona", response_model=Persona, tags=["personas"],
            responses={422: {"description": "invalid persona"}, **CONFLICT})
def replace_persona(line: LineId, body: Persona, entry: TenantDep, control_plane: ControlPlaneDep,
                    response: Response, if_match: IfMatch = None) -> Persona | JSONResponse:
    updated = _line(entry, line).model_copy(update={"persona": body})
    try:
        version = control_plane.store.save_line(entry.id, line, updated, create=False, if_match=_unquoted(if_match))
    except InvalidLine as error:  # its fields named within the persona, the body here
        raise InvalidLine([LineProblem(p.field[1:], p.reason) for p in error.problems]) from None
    except VersionConflict as error:
        return _conflict(error, error.current.persona.model_dump(mode="json") if error.current else None)
    response.headers.update(_etag(version))
    return _saved(control_plane, entry.id, line).persona
