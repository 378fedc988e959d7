"""Calls: placing one (until SIP and WebRTC place them), listing and ending those in progress."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from personas.store import TenantEntry
from telephony.control.api.deps import ControlPlaneDep, OperatorDep, TenantDep, TokenDep, call_source, source
from telephony.control.api.errors import CallFinished, UnknownAddress, UnknownCall
from telephony.control.api.models import CallPublic, CallRequest
from telephony.control.control_plane import ControlPlane
from telephony.control.registry import IN_PROGRESS, CallRecord
from telephony.control.routing import Caller

router = APIRouter(tags=["calls"])


@router.post("/calls", status_code=status.HTTP_201_CREATED, response_model=CallPublic,
             responses={404: {"description": "no line answers this address"},
                        429: {"description": "too many calls from this address (see Retry-After)"},
                        503: {"description": "no free slot, the tenant's limit or its fair share is reached "
                                             "(see Retry-After)"}})
async def place_call(body: CallRequest, token: TokenDep, control_plane: ControlPlaneDep,
                     request: Request) -> CallPublic:
    """Place a call to a line: the operator's token, or the admin token of the line's tenant."""
    route = control_plane.store.catalog.route(body.to)
    allowed = await run_in_threadpool(control_plane.auth.may_administer, token, route.tenant if route else None,
                                      source(request))
    if route is None or not allowed:
        raise UnknownAddress(f"no line answers {body.to!r}")
    caller = Caller(body.from_, body.to, call_source(request, token, control_plane))
    return CallPublic.of(await control_plane.router.place(route, caller))


@router.get("/calls", response_model=list[CallPublic], dependencies=[OperatorDep])
async def list_all_calls(control_plane: ControlPlaneDep) -> list[CallPublic]:
    """Every call in progress (operator only)."""
    return [CallPublic.of(r) for r in await control_plane.registry.calls()]


@router.get("/tenants/{tenant}/calls", response_model=list[CallPublic])
async def list_calls(entry: TenantDep, control_plane: ControlPlaneDep) -> list[CallPublic]:
    """The tenant's calls in progress."""
    return [CallPublic.of(r) for r in await control_plane.registry.calls(entry.id)]


async def _call(control_plane: ControlPlane, entry: TenantEntry, call_id: str) -> CallRecord:
    record = await control_plane.registry.call(call_id)
    if record is None or record.tenant != entry.id:
        raise UnknownCall(f"no call {call_id!r}")
    return record


@router.get("/tenants/{tenant}/calls/{call_id}", response_model=CallPublic)
async def read_call(call_id: str, entry: TenantDep, control_plane: ControlPlaneDep) -> CallPublic:
    """A call in progress, or one that finished within the last hour."""
    return CallPublic.of(await _call(control_plane, entry, call_id))


@router.delete("/tenants/{tenant}/calls/{call_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses={409: {"description": "the call has already finished"}})
async def end_call(call_id: str, entry: TenantDep, control_plane: ControlPlaneDep) -> Response:
    record = await _call(control_plane, entry, call_id)
    if record.state not in IN_PROGRESS:
        raise CallFinished(f"call {call_id!r} has already {record.state}")
    await control_plane.router.end(record, "ended by an admin")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
