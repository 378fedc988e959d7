"""What is kept of calls and where their events go: call records, recordings, the webhook outbox.

Workers publish each call's events here (`publish`: the `agent.call_reporter.CallEventSink`):
a `call.ended` is saved as the call's record, then every event is appended to the outbox for
delivery. In distributed mode the records and the outbox are in Redis, so a worker publishes
from its own process; in embedded mode they are files under the data folder. The control
plane also publishes `call.ended` for calls that failed with a lost worker and for calls it refused
(outcome `refused`: no slot, the tenant's limit; never answered, so no `call.started` before it),
and sweeps what is past its retention period. In embedded mode, calls in progress are also kept
on disk (`OpenCalls`): those a crash cut off are ended as failed at the next start (`recover`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agent.contracts import events as ev
from agent.contracts.recordings import recording_path
from personas.schema import Persona
from telephony.control.registry import CallRecord, NewCall
from telephony.events.call_records import CallRecordStore, SqliteCallRecords
from telephony.events.open_calls import OpenCalls
from telephony.events.outbox import Outbox, OutboxEvent
from telephony.events.recordings import RecordingStore

log = logging.getLogger(__name__)


def recording_ref(tenant: str, call_id: str) -> ev.Recording:
    return ev.Recording(url=f"/tenants/{tenant}/call-records/{call_id}/recording")


def outbox_event(event: ev.CallStarted | ev.TranscriptPartial | ev.CallEnded) -> OutboxEvent:
    return OutboxEvent(event.id, event.data.tenant, event.data.call_id, event.type, ev.event_body(event))


@dataclass
class CallHistory:
    outbox: Outbox
    records: CallRecordStore
    recordings: RecordingStore
    record_retention: timedelta = timedelta(days=90)
    recording_retention: timedelta = timedelta(days=30)
    open_calls: OpenCalls | None = None  # embedded mode: calls in progress, for `recover` after a crash

    async def publish(self, events: Sequence[ev.CallStarted | ev.TranscriptPartial | ev.CallEnded]) -> None:
        for event in events:
            if isinstance(event, ev.CallEnded):
                await self.records.save(event.data)
            elif isinstance(event, ev.CallStarted) and self.open_calls is not None:
                await asyncio.to_thread(self.open_calls.opened, event.data)
        await self.outbox.append([outbox_event(e) for e in events])
        if self.open_calls is not None:
            for event in events:
                if isinstance(event, ev.CallEnded):
                    await asyncio.to_thread(self.open_calls.closed, event.data.tenant, event.data.call_id)

    async def recover(self) -> int:
        """End as failed each call that a crash of this process left in progress (embedded mode):
        its record, its `call.ended` and, when it recorded, its recording repaired and linked."""
        if self.open_calls is None:
            return 0
        cut_off = await asyncio.to_thread(self.open_calls.left_open)
        for data, written in cut_off:
            path = recording_path(self.recordings.root, data.tenant, data.call_id)
            last_alive = max(written, path.stat().st_mtime if path.is_file() else 0.0)  # before its repair
            recording = await asyncio.to_thread(self.recordings.find, data.tenant, data.call_id)
            await self.publish([crashed_call_ended(data, last_alive, recording is not None)])
        if cut_off:
            log.warning("calls cut off by a stop without shutdown ended as failed", extra={"calls": len(cut_off)})
        return len(cut_off)

    async def publish_lost(self, call: CallRecord, persona: Persona | None) -> None:
        """`call.ended` for a call that failed without its worker (which will never report it)."""
        await self.publish([lost_call_ended(call, persona, self.recordings.root)])

    async def publish_refused(self, call: NewCall, persona: Persona | None, reason: str) -> None:
        """`call.ended` (outcome `refused`) for a call the router could not place: a record, and its webhook."""
        await self.publish([refused_call_ended(call, persona, reason, datetime.now(timezone.utc))])

    async def sweep(self) -> None:
        """Forget records and delete recordings past their retention."""
        cutoff = datetime.now(timezone.utc) - self.record_retention
        records = await self.records.forget_before(cutoff)
        recordings = await asyncio.to_thread(self.recordings.sweep, self.recording_retention.total_seconds())
        if records or recordings:
            log.info("call history swept", extra={"records": records, "recordings": recordings})

    async def close(self) -> None:
        await self.outbox.close()
        await self.records.close()


def lost_call_ended(call: CallRecord, persona: Persona | None, recordings: Path) -> ev.CallEnded:
    answered = datetime.fromtimestamp(call.created_at, timezone.utc)
    ended = datetime.fromtimestamp(call.ended_at or call.created_at, timezone.utc)
    duration = round((ended - answered).total_seconds(), 3)
    recorded = recording_path(recordings, call.tenant, call.call_id).is_file()
    data = ev.CallEndedData(
        call_id=call.call_id, tenant=call.tenant, line=call.line, from_=call.caller, to=call.callee,
        persona=ev.Persona(voice=persona.voice, role=persona.role) if persona else None, answered_at=answered,
        ended_at=ended, duration_seconds=duration, outcome="failed", reason=call.reason,
        transcript=ev.Transcript(items=[ev.Mark(at=0.0, event="answered"),
                                        ev.Mark(at=duration, event="failed", detail=call.reason)]),
        recording=recording_ref(call.tenant, call.call_id) if recorded else None)
    return ev.CallEnded(id=ev.event_id(call.tenant, call.call_id, "call.ended"), timestamp=ended, data=data)


CRASHED = "the service stopped while the call was in progress"


def crashed_call_ended(call: ev.CallStartedData, last_alive: float, recorded: bool) -> ev.CallEnded:
    ended = max(call.answered_at, datetime.fromtimestamp(last_alive, timezone.utc))
    duration = round((ended - call.answered_at).total_seconds(), 3)
    data = ev.CallEndedData(
        **call.model_dump(by_alias=True), ended_at=ended, duration_seconds=duration, outcome="failed",
        reason=CRASHED, transcript=ev.Transcript(items=[ev.Mark(at=0.0, event="answered"),
                                                        ev.Mark(at=duration, event="failed", detail=CRASHED)]),
        recording=recording_ref(call.tenant, call.call_id) if recorded else None)
    return ev.CallEnded(id=ev.event_id(call.tenant, call.call_id, "call.ended"), timestamp=ended, data=data)


def refused_call_ended(call: NewCall, persona: Persona | None, reason: str, at: datetime) -> ev.CallEnded:
    data = ev.CallEndedData(
        call_id=call.call_id, tenant=call.tenant, line=call.line, from_=call.caller, to=call.callee,
        persona=ev.Persona(voice=persona.voice, role=persona.role) if persona else None, answered_at=at,
        ended_at=at, duration_seconds=0.0, outcome="refused", reason=reason, transcript=ev.Transcript(),
        recording=None)
    return ev.CallEnded(id=ev.event_id(call.tenant, call.call_id, "call.ended"), timestamp=at, data=data)


def open_call_history(redis_url: str | None, redis_prefix: str, recordings_dir: Path, *, data_dir: Path | None = None,
                      record_retention: timedelta = timedelta(days=90),
                      recording_retention: timedelta = timedelta(days=30), lease: float = 60.0) -> CallHistory:
    """Redis when a URL is given (shared by every control plane and worker), else files in `data_dir`."""
    if redis_url is None:
        if data_dir is None:
            raise ValueError("without Redis, the call history needs a data folder")
        from telephony.events.file_outbox import FileOutbox

        outbox: Outbox = FileOutbox(data_dir / "outbox", lease=lease)
        records: CallRecordStore = SqliteCallRecords(data_dir / "calls.sqlite3")
        open_calls: OpenCalls | None = OpenCalls(data_dir / "open-calls")
    else:
        from telephony.events.redis_call_records import RedisCallRecords
        from telephony.events.redis_outbox import RedisOutbox

        outbox = RedisOutbox.from_url(redis_url, prefix=redis_prefix, lease=lease)
        records = RedisCallRecords.from_url(redis_url, prefix=redis_prefix,
                                            retention_seconds=record_retention.total_seconds())
        open_calls = None  # the registry in Redis outlives a control plane: the reaper ends lost calls
    return CallHistory(outbox, records, RecordingStore(recordings_dir), record_retention, recording_retention,
                       open_calls)
