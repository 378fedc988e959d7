"""WebRTC calls to a line, signalled as WHIP (RFC 9725): one HTTP exchange, no trickle ICE.

    POST   /tenants/{tenant}/lines/{line}/whip             an SDP offer (application/sdp) -> 201 with
                                                           the SDP answer; Location: the session URL
    DELETE /tenants/{tenant}/lines/{line}/whip/{call_id}   hang up (200)

An offer that cannot connect (not SDP, no audio, no ICE credentials, fingerprint or candidates) is
refused with 400 before anything else (`telephony.control.webrtc_offer`). The control plane then
places the call as any other (a slot reserved on the least loaded worker, which starts the
session), then forwards the offer to that worker, whose aiortc peer answers: media flows
between the caller and the worker, never through here. The offer must hold its ICE candidates
(gathering complete) and the answer holds the worker's; PATCH (trickle ICE, ICE restarts) is not
offered, so it gets 405. Authorised as the admin API: the operator's token or the tenant's.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from agent.contracts.workers import WorkerInfo
from personas.store import Route, TenantEntry, UnknownLine
from telephony.control.api.bodies import read_body
from telephony.control.api.deps import ControlPlaneDep, TenantDep, TokenDep, call_source
from telephony.control.api.errors import UnknownCall
from telephony.control.api.lines import LineId
from telephony.control.control_plane import ControlPlane
from telephony.control.registry import IN_PROGRESS, CallRecord
from telephony.control.routing import Caller
from telephony.control.webrtc_offer import check_offer
from telephony.control.worker_client import OfferRejected, WorkerRefused

router = APIRouter(prefix="/tenants/{tenant}/lines/{line}/whip", tags=["webrtc"])

SDP = "application/sdp"
MAX_OFFER_BYTES = 64 * 1024
HUNG_UP = "the caller hung up"


async def _offer(request: Request) -> str:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != SDP:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"the offer must be sent as {SDP}")
    body = await read_body(request, MAX_OFFER_BYTES, "the offer")
    try:
        offer = body.decode()
    except UnicodeDecodeError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the offer is not UTF-8 text") from error
    try:
        check_offer(offer)
    except ValueError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    return offer


def _route(entry: TenantEntry, line: str) -> Route:
    if line not in entry.lines:
        raise UnknownLine(f"no line {line!r}")
    return Route(entry, line, entry.lines[line])


async def _worker(control_plane: ControlPlane, worker_id: str) -> WorkerInfo:
    for worker in await control_plane.registry.workers():
        if worker.info.id == worker_id:
            return worker.info
    raise WorkerRefused(f"worker {worker_id} is gone")


@router.post("", status_code=status.HTTP_201_CREATED, response_class=Response,
             responses={201: {"content": {SDP: {}}, "description": "the SDP answer; Location: the session URL"},
                        400: {"description": "the offer cannot be answered"},
                        404: {"description": "no such line"},
                        415: {"description": "not application/sdp"},
                        429: {"description": "too many calls from this address (see Retry-After)"},
                        503: {"description": "no free slot, the tenant's limit or its fair share is reached "
                                             "(see Retry-After)"}})
async def call_line(line: LineId, request: Request, entry: TenantDep, token: TokenDep,
                    control_plane: ControlPlaneDep) -> Response:
    """Call the line from a browser or app: the body is the SDP offer, the answer comes back."""
    route = _route(entry, line)
    offer = await _offer(request)
    caller = f"webrtc:{request.client.host}" if request.client else "webrtc"
    record = await control_plane.router.place(route, Caller(caller, route.line.answers[0],
                                                            call_source(request, token, control_plane)))
    try:
        answer = await control_plane.workers.answer_webrtc(await _worker(control_plane, record.worker),
                                                           record.call_id, offer)
    except OfferRejected as error:
        await control_plane.router.end(record, f"the caller's offer was refused: {error}")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    except WorkerRefused as error:
        await control_plane.router.end(record, f"the worker could not answer the offer: {error}")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the call could not be connected: try again",
                            headers={"Retry-After": str(control_plane.settings.retry_after_seconds)}) from error
    except BaseException:
        await control_plane.router.end(record, "the call could not be connected")
        raise
    location = f"{router.prefix.format(tenant=entry.id, line=line)}/{record.call_id}"
    return Response(answer, status.HTTP_201_CREATED, media_type=SDP, headers={"Location": location})


async def _session(control_plane: ControlPlane, tenant: str, line: str, call_id: str) -> CallRecord:
    record = await control_plane.registry.call(call_id)
    if record is None or record.tenant != tenant or record.line != line:
        raise UnknownCall(f"no call {call_id!r} on this line")
    return record


@router.delete("/{call_id}", response_class=Response,
               responses={200: {"content": None, "description": "hung up (no body)"},
                          404: {"description": "no such call on this line"}})
async def hang_up(line: LineId, call_id: str, entry: TenantDep, control_plane: ControlPlaneDep) -> Response:
    """End the call (nothing to do if it has ended already)."""
    record = await _session(control_plane, entry.id, line, call_id)
    if record.state in IN_PROGRESS:
        await control_plane.router.end(record, HUNG_UP)
    return Response(status_code=status.HTTP_200_OK)
