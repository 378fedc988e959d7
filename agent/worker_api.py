"""The worker's internal HTTP API, for the control plane only (a shared secret as bearer token).

    POST   /worker/sessions          start a call (201), or refuse it: 503 full or draining, 409 exists,
                                     422 its prompt cannot be made
    GET    /worker/sessions          the calls on this worker
    GET    /worker/sessions/{id}     one call
    DELETE /worker/sessions/{id}     end a call (204)
    POST   /worker/sessions/{id}/webrtc   answer the caller's WebRTC offer: the call's media (200)
    PUT    /worker/sessions/{id}/rtp open or change a call's RTP leg (SIP): where it receives
    GET    /worker                   the worker: slots, model, draining, its engine's recent step times
    PUT    /worker/draining          drain (or undrain) the worker
    POST   /worker/voices            make a tenant's voice ready in the background (202 at once)

`plexline worker` serves it alone (`create_worker_app`); `plexline serve` includes `router` in
the control plane's app, on the same port.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Request,
    Response,
    status,
)
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from agent.contracts.calls import (
    CallDetails,
    CallSetupFailed,
    SessionExists,
    UnknownSession,
    WorkerDraining,
    WorkerFull,
)
from agent.contracts.invalid_request import answer_invalid_requests_briefly
from agent.contracts.media import MediaAddress, RtpLegSpec
from agent.contracts.workers import ClockPublic, VoiceToPrepare, WorkerPublic
from agent.session import Session
from agent.worker import Worker
from agent.worker_metrics import worker_registry

RETRY_AFTER_SECONDS = 1  # a refused call is retried on another worker at once; this is for others

_bearer = HTTPBearer(auto_error=False, scheme_name="WorkerSecret",
                     description="the worker secret shared with the control plane")


class SessionPublic(BaseModel):
    call_id: str
    tenant: str
    line: str
    caller: str
    callee: str
    started_at: float
    slot: int
    frames: int  # engine steps the call has taken
    concealed: int  # steps with no caller audio (silence was fed)

    @classmethod
    def of(cls, session: Session) -> SessionPublic:
        c, stats = session.call, session.slot.stats
        return cls(call_id=c.call_id, tenant=c.tenant, line=c.line, caller=c.caller, callee=c.callee,
                   started_at=session.started_at, slot=session.slot.index, frames=stats.frames,
                   concealed=stats.concealed)


class Draining(BaseModel):
    draining: bool


class VoicePreparing(BaseModel):
    preparing: bool  # False: this worker's model has no voices (echo)


class SessionDescription(BaseModel):
    """An SDP offer or answer, as WebRTC's RTCSessionDescriptionInit."""

    type: Literal["offer", "answer"]
    sdp: str = Field(max_length=64 * 1024)


def get_worker(request: Request) -> Worker:
    return request.app.state.worker


def require_secret(request: Request,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    expected: str = request.app.state.worker_secret
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the worker secret is required",
                            headers={"WWW-Authenticate": "Bearer"})


WorkerDep = Annotated[Worker, Depends(get_worker)]

router = APIRouter(prefix="/worker", tags=["worker (internal)"], dependencies=[Depends(require_secret)])


def _refused(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail,
                         headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


@router.post("/sessions", status_code=status.HTTP_201_CREATED, response_model=SessionPublic,
             responses={503: {"description": "no free slot, or draining"}, 409: {"description": "the call exists"},
                        422: {"description": "the call's prompt cannot be made (its voice, its role)"}})
async def create_session(call: CallDetails, worker: WorkerDep) -> SessionPublic:
    try:
        return SessionPublic.of(await worker.create_session(call))
    except (WorkerFull, WorkerDraining) as error:
        raise _refused(str(error)) from error
    except SessionExists as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
    except CallSetupFailed as error:
        raise HTTPException(422, str(error)) from error


@router.get("/sessions", response_model=list[SessionPublic])
async def list_sessions(worker: WorkerDep) -> list[SessionPublic]:
    return [SessionPublic.of(s) for s in worker.sessions]


@router.get("/sessions/{call_id}", response_model=SessionPublic)
async def read_session(call_id: str, worker: WorkerDep) -> SessionPublic:
    try:
        return SessionPublic.of(worker.session(call_id))
    except UnknownSession as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error


@router.delete("/sessions/{call_id}", status_code=status.HTTP_204_NO_CONTENT)
async def end_session(call_id: str, worker: WorkerDep, reason: str = "ended by the control plane") -> Response:
    try:
        await worker.end_session(call_id, reason)
    except UnknownSession as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/sessions/{call_id}/rtp", response_model=MediaAddress,
            responses={404: {"description": "no such call, or this worker takes no RTP"},
                       503: {"description": "no free RTP port"}})
async def set_rtp_leg(call_id: str, spec: RtpLegSpec, request: Request, worker: WorkerDep) -> MediaAddress:
    """The call's media over RTP to the address agreed in SIP; a second PUT (re-INVITE) changes it."""
    from agent.media.rtp_legs import NoMediaPort

    legs = getattr(request.app.state, "rtp_legs", None)
    if legs is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this worker takes no RTP media")
    try:
        return await legs.open(worker.session(call_id), spec)
    except UnknownSession as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    except NoMediaPort as error:
        raise _refused(str(error)) from error


@router.post("/sessions/{call_id}/webrtc", response_model=SessionDescription,
             responses={400: {"description": "the offer cannot be answered"},
                        409: {"description": "the call already has media"}})
async def answer_webrtc(call_id: str, offer: SessionDescription, worker: WorkerDep) -> SessionDescription:
    from agent.media.webrtc import OfferError

    if offer.type != "offer":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "an offer is expected")
    try:
        return SessionDescription(type="answer", sdp=await worker.answer_webrtc(call_id, offer.sdp))
    except UnknownSession as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
    except OfferError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    except RuntimeError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error


def _public(worker: Worker) -> WorkerPublic:
    i, c = worker.info, worker.clock.stats
    clock = ClockPublic(steps=c.steps, overruns=c.overruns, step_seconds=list(c.step_seconds))
    return WorkerPublic(id=i.id, address=i.address, model=i.model, version=i.version, slots=i.slots,
                        used=i.slots - worker.free_slots, free=worker.free_slots, draining=worker.draining, clock=clock)


@router.get("", response_model=WorkerPublic)
async def read_worker(worker: WorkerDep) -> WorkerPublic:
    return _public(worker)


@router.put("/draining", response_model=WorkerPublic)
async def set_draining(body: Draining, worker: WorkerDep) -> WorkerPublic:
    await worker.set_draining(body.draining)
    return _public(worker)


@router.post("/voices", status_code=status.HTTP_202_ACCEPTED, response_model=VoicePreparing)
async def prepare_voice(voice: VoiceToPrepare, worker: WorkerDep) -> VoicePreparing:
    """Make a tenant's voice ready before a call needs it (a WAV's voice prompt, made by the engine between
    steps); answered at once, the voice made in the background. A failure is in the worker's log only."""
    return VoicePreparing(preparing=worker.prepare_voice(voice.tenant, voice.voice))


def create_worker_app(worker: Worker, secret: str, shutdown_grace: float = 30.0, rtp_legs=None) -> FastAPI:
    """The app of `plexline worker`: the internal API, health and readiness; it runs the worker."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await worker.start()
        try:
            yield
        finally:
            await worker.stop(grace=shutdown_grace)

    app = FastAPI(title="plexline worker", lifespan=lifespan)
    answer_invalid_requests_briefly(app)
    app.state.worker, app.state.worker_secret = worker, secret
    app.state.rtp_legs = rtp_legs  # agent.media.rtp_legs.RtpLegs: media of calls answered over SIP
    app.include_router(router)
    from agent.media.media_stream import router as stream_router

    app.include_router(stream_router)  # carriers' media streams (authenticated per call, not by the secret)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(response: Response) -> dict[str, object]:
        """Takes calls: its engine is warm (the model is loaded and warmed before this app serves at all),
        its clock runs, and it is not draining."""
        ready = worker.clock.running and not worker.draining
        response.status_code = status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
        return {"ready": ready, "free": worker.free_slots, "draining": worker.draining}

    metrics_registry = worker_registry(worker)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics: slots and engine step times, no tenant data (no secret needed)."""
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app
