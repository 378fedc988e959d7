"""How the control plane asks a worker to start or end a call (`plexline serve` adds a direct call to its
own worker: `plexline.embedded.LocalWorkerClient`)."""

from __future__ import annotations

from typing import Protocol

import httpx

from agent.contracts.calls import CallDetails
from agent.contracts.media import MediaAddress, RtpLegSpec
from agent.contracts.workers import VoiceToPrepare, WorkerInfo


class WorkerRefused(Exception):
    """The worker did not take the call (full, draining, unreachable, failed): try another."""


class OfferRejected(Exception):
    """The worker cannot answer the caller's WebRTC offer (not SDP, no audio, no codec in common)."""


class WorkerClient(Protocol):
    async def create_session(self, worker: WorkerInfo, call: CallDetails) -> None:
        """Raises WorkerRefused."""

    async def end_session(self, worker: WorkerInfo, call_id: str, reason: str) -> bool:
        """False if the worker does not hold the call; raises WorkerRefused if it cannot be asked."""

    async def answer_webrtc(self, worker: WorkerInfo, call_id: str, offer: str) -> str:
        """The worker's SDP answer to the caller's offer; raises OfferRejected or WorkerRefused."""

    async def set_rtp(self, worker: WorkerInfo, call_id: str, spec: RtpLegSpec) -> MediaAddress:
        """Open (or change) the call's RTP leg on its worker; raises WorkerRefused."""

    async def prepare_voice(self, worker: WorkerInfo, voice: VoiceToPrepare) -> None:
        """Have the worker make a tenant's voice ready in the background; raises WorkerRefused."""

    async def close(self) -> None: ...


class HttpWorkerClient:
    def __init__(self, secret: str, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None):
        self._client = httpx.AsyncClient(timeout=timeout, headers={"Authorization": f"Bearer {secret}"},
                                         transport=transport)

    async def create_session(self, worker: WorkerInfo, call: CallDetails) -> None:
        response = await self._request("POST", worker, "/worker/sessions", json=call.model_dump(mode="json"))
        if response.status_code != httpx.codes.CREATED:
            raise WorkerRefused(f"worker {worker.id} answered {response.status_code}: {_detail(response)}")

    async def end_session(self, worker: WorkerInfo, call_id: str, reason: str) -> bool:
        response = await self._request("DELETE", worker, f"/worker/sessions/{call_id}", params={"reason": reason})
        if response.status_code not in (httpx.codes.NO_CONTENT, httpx.codes.NOT_FOUND):
            raise WorkerRefused(f"worker {worker.id} answered {response.status_code}: {_detail(response)}")
        return response.status_code == httpx.codes.NO_CONTENT

    async def set_rtp(self, worker: WorkerInfo, call_id: str, spec: RtpLegSpec) -> MediaAddress:
        response = await self._request("PUT", worker, f"/worker/sessions/{call_id}/rtp", json=spec.model_dump())
        if response.status_code != httpx.codes.OK:
            raise WorkerRefused(f"worker {worker.id} answered {response.status_code}: {_detail(response)}")
        return MediaAddress.model_validate(response.json())

    async def answer_webrtc(self, worker: WorkerInfo, call_id: str, offer: str) -> str:
        response = await self._request("POST", worker, f"/worker/sessions/{call_id}/webrtc",
                                       json={"type": "offer", "sdp": offer})
        if response.status_code == httpx.codes.BAD_REQUEST:
            raise OfferRejected(_detail(response))
        if response.status_code != httpx.codes.OK:
            raise WorkerRefused(f"worker {worker.id} answered {response.status_code}: {_detail(response)}")
        return response.json()["sdp"]

    async def prepare_voice(self, worker: WorkerInfo, voice: VoiceToPrepare) -> None:
        response = await self._request("POST", worker, "/worker/voices", json=voice.model_dump())
        if response.status_code != httpx.codes.ACCEPTED:
            raise WorkerRefused(f"worker {worker.id} answered {response.status_code}: {_detail(response)}")

    async def _request(self, method: str, worker: WorkerInfo, path: str, **kwargs) -> httpx.Response:
        try:
            return await self._client.request(method, worker.address.rstrip("/") + path, **kwargs)
        except httpx.HTTPError as error:
            raise WorkerRefused(f"worker {worker.id} unreachable: {error!r}") from error

    async def close(self) -> None:
        await self._client.aclose()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return response.text[:200]
