"""The registry in this process's memory: `plexline serve` without Redis.

It behaves as `RedisRegistry` does (the same tests run against both). Every method runs to its
end without awaiting, so on one event loop each is as atomic as a Lua script in Redis.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from fractions import Fraction

from agent.contracts.calls import CallOutcome
from agent.contracts.workers import HeartbeatReply, WorkerInfo
from telephony.control.registry import (
    Attempt,
    FINISHED_CALL_TTL,
    IN_PROGRESS,
    RESERVATION_GRACE,
    CallRecord,
    DuplicateCall,
    NewCall,
    NoCapacity,
    StoredDialog,
    TenantLimitReached,
    WorkerStatus,
    worker_lost_reason,
)


@dataclass
class _Worker:
    info: WorkerInfo
    alive_until: float  # the registry's clock
    draining: bool = False
    calls: dict[str, float] = field(default_factory=dict)  # call id -> reserved at (the registry's clock)


@dataclass
class _Attempts:
    """One source's admitted attempts still in its window, oldest first, and until when a refusal
    is a repeat (a window after the first one)."""

    times: deque[float] = field(default_factory=deque)
    refused_until: float = float("-inf")

    def stale(self, now: float, window: float) -> bool:
        """Nothing of it counts any longer: forget it."""
        return (not self.times or self.times[-1] <= now - window) and self.refused_until <= now


class MemoryRegistry:
    def __init__(self, finished_call_ttl: float = FINISHED_CALL_TTL, reservation_grace: float = RESERVATION_GRACE,
                 clock: Callable[[], float] = time.monotonic):
        """`clock`: seconds of a monotonic clock (tests pass their own)."""
        self.finished_call_ttl = finished_call_ttl
        self.reservation_grace = reservation_grace
        self._clock = clock
        self._workers: dict[str, _Worker] = {}
        self._calls: dict[str, CallRecord] = {}
        self._active: defaultdict[str, set[str]] = defaultdict(set)  # tenant -> call ids in progress
        self._from: defaultdict[str, set[str]] = defaultdict(set)  # source -> call ids in progress
        self._source_of: dict[str, str] = {}  # call id in progress -> its source, where it has one
        self._attempts: OrderedDict[str, _Attempts] = OrderedDict()  # source -> its attempts, latest change last
        self._expires: dict[str, float] = {}  # finished call id -> forgotten at (the registry's clock)
        self._dialogs: dict[str, tuple[StoredDialog, float]] = {}  # SIP dialog -> (it, forgotten at)

    # -- workers --------------------------------------------------------------------------------

    async def heartbeat(self, worker: WorkerInfo, ttl: float, sessions: Collection[str]) -> HeartbeatReply:
        now = self._clock()
        entry = self._workers.get(worker.id)
        if entry is None:
            entry = self._workers[worker.id] = _Worker(worker, now + ttl)
        entry.info, entry.alive_until = worker, now + ttl
        held = set(sessions)
        for call_id, reserved_at in list(entry.calls.items()):
            if call_id not in held and now - reserved_at > self.reservation_grace:
                self._finish(call_id, "failed", "the worker does not hold the session")
        orphans = tuple(s for s in sessions if s not in entry.calls)
        return HeartbeatReply(entry.draining, orphans)

    async def set_draining(self, worker_id: str, draining: bool) -> bool:
        entry = self._workers.get(worker_id)
        if entry is not None:
            entry.draining = draining
        return entry is not None

    async def deregister(self, worker_id: str, reason: str) -> None:
        self._remove(worker_id, reason)

    async def workers(self) -> list[WorkerStatus]:
        now = self._clock()
        return [WorkerStatus(w.info, len(w.calls), w.draining, w.alive_until > now)
                for _, w in sorted(self._workers.items())]

    async def reap(self) -> list[CallRecord]:
        now = self._clock()
        failed: list[CallRecord] = []
        for worker_id in [i for i, w in self._workers.items() if w.alive_until <= now]:
            failed += self._remove(worker_id, worker_lost_reason(worker_id))
        return failed

    def _remove(self, worker_id: str, reason: str) -> list[CallRecord]:
        entry = self._workers.pop(worker_id, None)
        if entry is None:
            return []
        return [record for call_id in list(entry.calls) if (record := self._finish(call_id, "failed", reason))]

    # -- calls ----------------------------------------------------------------------------------

    async def reserve(self, call: NewCall, exclude: Collection[str] = ()) -> WorkerInfo:
        self._forget_expired()
        if call.call_id in self._calls:
            raise DuplicateCall(call.call_id)
        held = len(self._active[call.tenant])
        if held >= call.tenant_limit:
            raise TenantLimitReached(call.tenant)
        if call.source and len(self._from[call.source]) >= call.source_limit:
            raise call.source_refusal()
        now = self._clock()
        live = [(i, w) for i, w in self._workers.items() if w.alive_until > now and not w.draining]
        candidates = [w for i, w in live if i not in exclude and len(w.calls) < w.info.slots]
        if not candidates:
            raise NoCapacity("no worker has a free slot")
        draining = [w for w in self._workers.values() if w.alive_until > now and w.draining]
        slots = sum(w.info.slots for _, w in live) + sum(len(w.calls) for w in draining)
        free = sum(max(w.info.slots - len(w.calls), 0) for _, w in live)
        if call.over_fair_share(held, slots, free):
            raise call.fair_share_refusal(held, slots, free)
        best = min(candidates, key=_load_order)
        best.calls[call.call_id] = now
        self._active[call.tenant].add(call.call_id)
        if call.source:
            self._from[call.source].add(call.call_id)
            self._source_of[call.call_id] = call.source
        self._calls[call.call_id] = CallRecord(call.call_id, call.tenant, call.line, best.info.id, "reserved",
                                               call.caller, call.callee, time.time())
        return best.info

    async def admit_attempt(self, source: str, window: float, limit: int) -> Attempt:
        now = self._clock()
        while self._attempts and next(iter(self._attempts.values())).stale(now, window):
            self._attempts.popitem(last=False)
        attempts = self._attempts.setdefault(source, _Attempts())
        while attempts.times and attempts.times[0] <= now - window:
            attempts.times.popleft()
        if len(attempts.times) < limit:
            attempts.times.append(now)
            self._attempts.move_to_end(source)
            return Attempt(admitted=True)
        first = attempts.refused_until <= now
        if first:
            attempts.refused_until = now + window
            self._attempts.move_to_end(source)
        return Attempt(admitted=False, retry_after=attempts.times[0] + window - now, first_refusal=first)

    async def activate(self, call_id: str) -> bool:
        record = self._calls.get(call_id)
        if record is None or record.state != "reserved":
            return False
        self._calls[call_id] = replace(record, state="active")
        return True

    async def cancel(self, call_id: str) -> None:
        record = self._calls.get(call_id)
        if record is not None and record.state in IN_PROGRESS:
            self._free_slot(record)
            del self._calls[call_id]

    async def release(self, call_id: str, outcome: CallOutcome, reason: str = "") -> bool:
        return self._finish(call_id, outcome, reason) is not None

    async def call(self, call_id: str) -> CallRecord | None:
        self._forget_expired()
        return self._calls.get(call_id)

    async def calls(self, tenant: str | None = None) -> list[CallRecord]:
        tenants = self._active.values() if tenant is None else [self._active.get(tenant, set())]
        return [self._calls[call_id] for ids in tenants for call_id in ids]

    def _finish(self, call_id: str, outcome: CallOutcome, reason: str) -> CallRecord | None:
        record = self._calls.get(call_id)
        if record is None or record.state not in IN_PROGRESS:
            return None
        self._free_slot(record)
        record = self._calls[call_id] = replace(record, state=outcome, reason=reason, ended_at=time.time())
        self._expires[call_id] = self._clock() + self.finished_call_ttl
        return record

    def _free_slot(self, record: CallRecord) -> None:
        self._active[record.tenant].discard(record.call_id)
        source = self._source_of.pop(record.call_id, None)
        if source is not None:
            self._from[source].discard(record.call_id)
            if not self._from[source]:
                del self._from[source]
        worker = self._workers.get(record.worker)
        if worker is not None:
            worker.calls.pop(record.call_id, None)

    def _forget_expired(self) -> None:
        now = self._clock()
        for call_id in [c for c, at in self._expires.items() if at <= now]:
            del self._expires[call_id]
            self._calls.pop(call_id, None)

    # -- SIP dialogs -----------------------------------------------------------------------------

    async def put_dialog(self, dialog: StoredDialog, ttl: float) -> None:
        self._dialogs[dialog.dialog] = (dialog, self._clock() + ttl)

    async def update_dialog(self, dialog: str, state: str) -> bool:
        stored = self._live_dialog(dialog)
        if stored is not None:
            self._dialogs[dialog] = (replace(stored, state=state), self._dialogs[dialog][1])
        return stored is not None

    async def take_dialog(self, dialog: str) -> StoredDialog | None:
        stored = self._live_dialog(dialog)
        self._dialogs.pop(dialog, None)
        return stored

    async def ended_dialogs(self) -> list[str]:
        now = self._clock()
        for dialog in [d for d, (_, until) in self._dialogs.items() if until <= now]:
            del self._dialogs[dialog]
        return [d for d, (stored, _) in self._dialogs.items()
                if (record := self._calls.get(stored.call_id)) is None or record.state not in IN_PROGRESS]

    def _live_dialog(self, dialog: str) -> StoredDialog | None:
        stored, until = self._dialogs.get(dialog, (None, 0.0))
        return stored if until > self._clock() else None

    # -- the rest of the protocol ---------------------------------------------------------------

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass


def _load_order(worker: _Worker) -> tuple[Fraction, int, str]:
    used, slots = len(worker.calls), worker.info.slots
    return Fraction(used, slots), -(slots - used), worker.info.id
