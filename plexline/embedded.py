"""`plexline serve`: the control plane and one worker in one process, so calls for that worker skip HTTP."""

from __future__ import annotations

from fastapi import FastAPI

from agent.contracts.calls import CallDetails, SessionError, UnknownSession
from agent.contracts.media import MediaAddress, RtpLegSpec
from agent.contracts.workers import VoiceToPrepare, WorkerInfo
from agent.media.media_stream import router as stream_router
from agent.media.rtp_legs import NoMediaPort, RtpLegs
from agent.media.webrtc import OfferError
from agent.worker import Worker
from agent.worker_api import router as worker_router
from agent.worker_metrics import register_worker_metrics
from telephony.control.app import create_app
from telephony.control.control_plane import ControlPlane
from telephony.control.worker_client import OfferRejected, WorkerClient, WorkerRefused


class LocalWorkerClient:
    """`plexline serve`: calls for this process's own worker skip HTTP; others go to `others`."""

    def __init__(self, worker: Worker, others: WorkerClient, rtp_legs: RtpLegs | None = None):
        self.worker, self.others, self.rtp_legs = worker, others, rtp_legs

    async def create_session(self, worker: WorkerInfo, call: CallDetails) -> None:
        if worker.id != self.worker.info.id:
            return await self.others.create_session(worker, call)
        try:
            await self.worker.create_session(call)
        except SessionError as error:
            raise WorkerRefused(f"worker {worker.id}: {error}") from error

    async def end_session(self, worker: WorkerInfo, call_id: str, reason: str) -> bool:
        if worker.id != self.worker.info.id:
            return await self.others.end_session(worker, call_id, reason)
        try:
            await self.worker.end_session(call_id, reason)
        except UnknownSession:
            return False
        return True

    async def answer_webrtc(self, worker: WorkerInfo, call_id: str, offer: str) -> str:
        if worker.id != self.worker.info.id:
            return await self.others.answer_webrtc(worker, call_id, offer)
        try:
            return await self.worker.answer_webrtc(call_id, offer)
        except OfferError as error:
            raise OfferRejected(str(error)) from error
        except (SessionError, RuntimeError) as error:
            raise WorkerRefused(f"worker {worker.id}: {error}") from error

    async def set_rtp(self, worker: WorkerInfo, call_id: str, spec: RtpLegSpec) -> MediaAddress:
        if worker.id != self.worker.info.id:
            return await self.others.set_rtp(worker, call_id, spec)
        if self.rtp_legs is None:
            raise WorkerRefused(f"worker {worker.id} takes no RTP media")
        try:
            return await self.rtp_legs.open(self.worker.session(call_id), spec)
        except (SessionError, NoMediaPort) as error:
            raise WorkerRefused(f"worker {worker.id}: {error}") from error

    async def prepare_voice(self, worker: WorkerInfo, voice: VoiceToPrepare) -> None:
        if worker.id != self.worker.info.id:
            return await self.others.prepare_voice(worker, voice)
        self.worker.prepare_voice(voice.tenant, voice.voice)

    async def close(self) -> None:
        await self.others.close()


def create_embedded_app(control_plane: ControlPlane, worker: Worker, rtp_legs: RtpLegs | None = None) -> FastAPI:
    """The control plane's app with its own worker's internal API (other control planes may place calls on
    it) and the carriers' media streams to that worker's calls; its /metrics has the worker's too."""
    register_worker_metrics(control_plane.metrics.registry, worker)
    app = create_app(control_plane)
    app.state.worker = worker
    app.state.worker_secret = control_plane.settings.worker_secret.get_secret_value()
    app.state.rtp_legs = rtp_legs
    app.include_router(worker_router)
    app.include_router(stream_router)
    return app
