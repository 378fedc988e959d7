"""How a worker reports its calls: `call.started` when one is answered, `call.transcript.partial`
every few seconds on lines that ask for it, `call.ended` with the transcript and the recording.

Events go to a `CallEventSink` (the control plane's call history: in Redis in distributed mode,
in this process in embedded mode) in the order they were made, in batches. While the sink
cannot be reached they wait here, in order, and go when it is back; a worker that dies
meanwhile loses them, and the control plane reports its calls as failed instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from agent.contracts import events as ev
from agent.contracts.calls import CallOutcome
from agent.contracts.errors import describe
from agent.contracts.tasks import cancel_and_wait

if TYPE_CHECKING:
    from agent.session import Session

log = logging.getLogger(__name__)

Event = ev.CallStarted | ev.TranscriptPartial | ev.CallEnded
TICK = 0.5  # seconds between looks at the calls due a partial transcript
TRANSFER_REASON_PREFIX = "transfer requested"  # agent.contracts.media: the caller asked for a human
CALLER_REASONS = ("the caller hung up", "the caller cancelled", "the caller's media ended")


class CallEventSink(Protocol):
    async def publish(self, events: Sequence[Event]) -> None:
        """Keep the events durably (raises if they were not kept)."""


def outcome_of(reason: str, outcome: CallOutcome) -> ev.Outcome:
    """How a call ended, for the tenant, from how and why the worker ended it."""
    if outcome == "failed":
        return "failed"
    if reason.startswith(TRANSFER_REASON_PREFIX):
        return "transferred"
    return "caller_hung_up" if reason in CALLER_REASONS else "agent_hung_up"


def recording_url(tenant: str, call_id: str) -> str:
    return f"/tenants/{tenant}/call-records/{call_id}/recording"


def _info(session: Session) -> dict:
    c = session.call
    return {"call_id": c.call_id, "tenant": c.tenant, "line": c.line, "from_": c.caller, "to": c.callee,
            "persona": ev.Persona(voice=c.persona.voice, role=c.persona.role), "answered_at": session.answered_at}


def started_event(session: Session) -> ev.CallStarted:
    c = session.call
    return ev.CallStarted(id=ev.event_id(c.tenant, c.call_id, "call.started"), timestamp=session.answered_at,
                          data=ev.CallStartedData(**_info(session)))


def ended_event(session: Session, ended_at: datetime) -> ev.CallEnded:
    c, recorder = session.call, session.recorder
    kept = recorder is not None and recorder.kept
    data = ev.CallEndedData(**_info(session), ended_at=ended_at,
                            duration_seconds=round((ended_at - session.answered_at).total_seconds(), 3),
                            outcome=outcome_of(session.end_reason, session.end_outcome), reason=session.end_reason,
                            transcript=ev.Transcript(items=session.timeline.items()),
                            recording=ev.Recording(url=recording_url(c.tenant, c.call_id)) if kept else None,
                            recording_incomplete=recorder.stopped if recorder is not None else None)
    return ev.CallEnded(id=ev.event_id(c.tenant, c.call_id, "call.ended"), timestamp=ended_at, data=data)


@dataclass
class _Partials:
    every: float
    last: float  # loop time of the last partial (or of the answer)
    seq: int = 0
    sent: int = 0  # settled items already sent
    pending: str = ""


class CallReporter:
    def __init__(self, sink: CallEventSink, retry_interval: float = 1.0):
        self.sink = sink
        self.retry_interval = retry_interval
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._partials: dict[str, tuple[Session, _Partials]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def unsent(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="call-reporter")

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to `timeout` seconds), then stop."""
        self._partials.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queue and loop.time() < deadline and self._task is not None and not self._task.done():
            await asyncio.sleep(0.02)
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._queue:
            log.error("call events not reported: the call history was unreachable",
                      extra={"events": [e.id for e in self._queue]})

    def started(self, session: Session) -> None:
        self._send(started_event(session))
        every = session.call.partial_transcript_seconds
        if every is not None:
            self._partials[session.id] = (session, _Partials(every, asyncio.get_running_loop().time()))

    def ended(self, session: Session, ended_at: datetime | None = None) -> None:
        self._partials.pop(session.id, None)
        self._send(ended_event(session, ended_at or datetime.now(timezone.utc)))

    def _send(self, event: Event) -> None:
        self._queue.append(event)
        self._ready.set()

    def _due_partials(self) -> None:
        now = asyncio.get_running_loop().time()
        for session, state in self._partials.values():
            if now - state.last < state.every:
                continue
            state.last = now
            settled, pending = session.timeline.settled()
            if len(settled) == state.sent and pending == state.pending:
                continue  # nothing new to say
            state.seq += 1
            c = session.call
            self._send(ev.TranscriptPartial(
                id=ev.event_id(c.tenant, c.call_id, "call.transcript.partial", state.seq),
                timestamp=datetime.now(timezone.utc),
                data=ev.TranscriptPartialData(call_id=c.call_id, tenant=c.tenant, line=c.line, seq=state.seq,
                                              items=settled[state.sent:], pending=pending)))
            state.sent, state.pending = len(settled), pending

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), TICK)
            except TimeoutError:
                pass
            self._due_partials()
            if not self._queue:
                self._ready.clear()
                continue
            batch = list(self._queue)
            try:
                await self.sink.publish(batch)
            except Exception as error:
                log.warning("cannot report call events yet", extra={"events": len(batch), "error": describe(error)})
                await asyncio.sleep(self.retry_interval)
                continue
            for _ in batch:
                self._queue.popleft()
