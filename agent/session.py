"""A call on a worker: what the control plane said about it, and its seat in the engine.

The seam for transports (WebRTC, RTP from a SIP trunk, a media WebSocket; later issues): a
transport gives the session a `MediaLink`, which moves audio between its track and the session's
`CallSlot` (caller audio in with `slot.push`, agent frames out of `slot.output`) until the
caller's media ends. The session owns the link's task: it cancels it when the call ends for any
other reason, and asks to end when the link returns or fails.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent.registration import CallOutcome
from personas.schema import Persona
from personas.tenant import Greeting

if TYPE_CHECKING:  # the control plane imports this module; it has no use for torch
    from agent.engine.clock import CallSlot

CALL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class SessionError(Exception):
    pass


class WorkerFull(SessionError):
    pass


class WorkerDraining(SessionError):
    pass


class SessionExists(SessionError):
    pass


class UnknownSession(SessionError):
    pass


class CallSetupFailed(SessionError):
    """The call's prompt could not be made (a voice file missing or unreadable, a prompt too long)."""


class CallDetails(BaseModel):
    """Everything a worker needs to start a call; the persona is fixed for the call's life."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    call_id: str = Field(pattern=CALL_ID_PATTERN)
    tenant: str
    line: str
    caller: str = ""
    callee: str = ""
    persona: Persona
    greeting: Greeting = "agent_first"
    recording: bool = False
    max_call_seconds: float = Field(gt=0)


class MediaLink(Protocol):
    async def run(self, slot: CallSlot) -> None:
        """Bridge the transport's audio and `slot` until the caller's media ends."""


class Session:
    def __init__(self, call: CallDetails, slot: CallSlot):
        self.call = call
        self.slot = slot
        self.started_at = time.time()
        self.end_requested = asyncio.Event()
        self.end_reason = ""
        self.end_outcome: CallOutcome = "ended"
        self._media: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.call.call_id

    def attach(self, media: MediaLink) -> None:
        if self._media is not None:
            raise RuntimeError(f"call {self.id} already has media")
        self._media = asyncio.get_running_loop().create_task(media.run(self.slot), name=f"media-{self.id}")
        self._media.add_done_callback(self._media_done)

    def request_end(self, reason: str, outcome: CallOutcome = "ended") -> None:
        """Ask the worker to end the call; the first reason given is the one recorded."""
        if not self.end_requested.is_set():
            self.end_reason, self.end_outcome = reason, outcome
            self.end_requested.set()

    async def close(self) -> None:
        """Stop the media link; called by the worker as the call ends."""
        if self._media is not None and not self._media.done():
            self._media.cancel()
            await asyncio.wait([self._media])

    def _media_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self.request_end("the caller's media ended")
        else:
            self.request_end(f"media failed: {error!r}", "failed")
