"""The outbox of one process (`plexline serve` without Redis): an append-only journal file.

Every change is a JSON line appended to `<folder>/outbox.journal`:

    {"op": "add", "id", "tenant", "key", "type", "body", "at"}   an event (fsynced before append returns)
    {"op": "retry", "id", "attempts", "due", "error"}           a failed attempt
    {"op": "done", "id", "tenant", "key", "type", "attempts",    delivered (the ack; older journals have the id
     "status", "at"}                                             alone), kept for the admins' list
    {"op": "dead", "id", "at", "error", "attempts"}              dead-lettered (fsynced)
    {"op": "replay", "id", "at"}                                 a dead letter queued again (fsynced)

At start the journal is read back into memory (a line torn by a crash is cut off; a write that
fails on a full disk is cut back off before it raises, so no part of it is ever read); fsyncs of
concurrent appends are shared, so many events cost one sync. When most lines describe events
that are gone, the journal is rewritten with only the live ones (to a temporary file, synced,
then renamed over it). A lost "done" or "retry" line (a crash before the next sync) only means
one more attempt.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from telephony.events.outbox import (
    DELIVERED_LISTED,
    SENT_MEMORY_SECONDS,
    Claim,
    DeadLetter,
    Delivered,
    OutboxEvent,
    Undelivered,
)

log = logging.getLogger(__name__)

JOURNAL = "outbox.journal"


@dataclass
class _Entry:
    event: OutboxEvent
    created_at: float
    attempts: int = 0
    due: float = 0.0  # when it may be claimed (a retry's time, or a lease's end)
    error: str = ""
    died_at: float | None = None


class _Journal:
    """Lines appended to one file, with fsyncs shared by everyone waiting at the time.

    A write that fails (a full disk) is cut back off the file before the error is raised, so the
    file never holds part of a record and nothing of a failed write reaches it later: the caller
    may try the same records again. Writes go straight to the file descriptor (no buffer that
    could keep the rest of a failed record and flush it after the next one)."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self.lines = 0
        self._written = 0
        self._synced = 0
        self._syncing: asyncio.Task[None] | None = None

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, records: Sequence[dict]) -> None:
        data = _lines(records)
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError:
            if done:
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        self.lines += len(records)
        self._written += 1

    async def sync(self) -> None:
        target = self._written
        while self._synced < target:
            if self._syncing is None:
                self._syncing = asyncio.get_running_loop().create_task(self._fsync(), name="outbox-fsync")
            await asyncio.shield(self._syncing)

    async def _fsync(self) -> None:
        upto = self._written
        try:
            await asyncio.to_thread(os.fsync, self._fd)
            self._synced = max(self._synced, upto)
        finally:
            self._syncing = None

    async def idle(self) -> None:
        while self._syncing is not None:
            await asyncio.shield(self._syncing)

    def rewrite(self, records: Sequence[dict]) -> None:
        """Replace the file's contents with `records`, atomically (call when idle); on an error
        (a full disk) the file is left as it was."""
        temporary = self.path.with_suffix(".tmp")
        try:
            with temporary.open("wb") as out:
                out.write(_lines(records))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        os.close(self._fd)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self.lines = len(records)
        self._synced = self._written

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _lines(records: Sequence[dict]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)


def _read_journal(path: Path) -> list[dict]:
    """The journal's records; a torn last line is cut off the file. A damaged line elsewhere (left
    by an older version on a full disk) is skipped with an error in the log: one lost record
    costs at most one event, a start that fails on it would cost all of them."""
    if not path.exists():
        return []
    data = path.read_bytes()
    records, offset = [], 0
    for line in data.splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("no end of line")
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("op"), str) or "id" not in record:
                raise ValueError("not a record")
            records.append(record)
        except ValueError:
            if offset + len(line) == len(data):  # the crash tore the last line
                log.warning("outbox journal: cutting off a torn last line", extra={"bytes": len(line)})
                os.truncate(path, offset)
                break
            log.error("outbox journal: skipping a damaged line", extra={"path": str(path), "byte": offset,
                                                                         "bytes": len(line)})
        offset += len(line)
    return records


class FileOutbox:
    def __init__(self, folder: Path, lease: float = 60.0, compact_min_lines: int = 10_000):
        folder.mkdir(parents=True, exist_ok=True)
        self.lease = lease
        self.compact_min_lines = compact_min_lines
        self._events: dict[str, _Entry] = {}  # not delivered (dead letters included)
        self._queues: dict[str, deque[str]] = {}  # key -> ids neither delivered nor dead, in order
        self._dead: dict[str, dict[str, None]] = {}  # tenant -> ids, in order of death
        self._sent: OrderedDict[str, float] = OrderedDict()  # id -> delivered at
        self._delivered: dict[str, deque[dict]] = {}  # tenant -> its last "done" records with a status
        self._ready: list[tuple[float, str]] = []  # heap of (due, id) of queue heads; stale ones are skipped
        self._wake = asyncio.Event()
        self._compacting = False
        records = _read_journal(folder / JOURNAL)
        for record in records:
            self._apply(record)
        for queue in self._queues.values():
            heapq.heappush(self._ready, (self._events[queue[0]].due, queue[0]))
        self._journal = _Journal(folder / JOURNAL)
        self._journal.lines = len(records)

    # -- the journal's records, applied to memory --------------------------------------------------

    def _apply(self, r: dict) -> None:
        op, event_id = r["op"], r["id"]
        if op == "add":
            if event_id in self._events:  # added twice by an older version after a failed write
                return
            event = OutboxEvent(event_id, r["tenant"], r["key"], r["type"], r["body"].encode())
            self._events[event_id] = _Entry(event, r["at"])
            self._queues.setdefault(event.key, deque()).append(event_id)
        elif op == "retry" and event_id in self._events:
            entry = self._events[event_id]
            entry.attempts, entry.due, entry.error = r["attempts"], r["due"], r["error"]
        elif op == "done":
            entry = self._events.pop(event_id, None)
            if entry is not None:
                self._leave_queue(entry)
                self._sent[event_id] = time.time()
            if r.get("status") is not None:
                self._delivered.setdefault(r["tenant"], deque(maxlen=DELIVERED_LISTED)).append(r)
        elif op == "dead" and event_id in self._events:
            entry = self._events[event_id]
            entry.died_at, entry.error, entry.attempts = r["at"], r["error"], r["attempts"]
            self._leave_queue(entry)
            self._dead.setdefault(entry.event.tenant, {})[event_id] = None
        elif op == "replay" and event_id in self._events:
            entry = self._events[event_id]
            self._dead.get(entry.event.tenant, {}).pop(event_id, None)
            entry.created_at, entry.attempts, entry.due, entry.error, entry.died_at = r["at"], 0, 0.0, "", None
            self._queues.setdefault(entry.event.key, deque()).append(event_id)

    def _leave_queue(self, entry: _Entry) -> None:
        """Take a delivered or dead event out of its key's queue."""
        queue = self._queues.get(entry.event.key)
        if queue is None:
            return
        if entry.event.id in queue:
            queue.remove(entry.event.id)
        if not queue:
            del self._queues[entry.event.key]

    def _log(self, record: dict) -> None:
        self._journal.write([record])
        self._apply(record)

    def _schedule_head(self, key: str, now: float) -> None:
        queue = self._queues.get(key)
        if queue:
            head = self._events[queue[0]]
            if not head.attempts:  # one that failed before keeps the time of its retry
                head.due = now
            heapq.heappush(self._ready, (head.due, head.event.id))
            self._wake.set()

    # -- the protocol -------------------------------------------------------------------------------

    async def append(self, events: Sequence[OutboxEvent]) -> int:
        self._forget_sent()
        now = time.time()
        fresh, seen = [], set()
        for e in events:
            if e.id not in self._events and e.id not in self._sent and e.id not in seen:
                fresh.append(e)
                seen.add(e.id)
        if not fresh:
            return 0
        records = [{"op": "add", "id": e.id, "tenant": e.tenant, "key": e.key, "type": e.type,
                    "body": e.body.decode(), "at": now} for e in fresh]
        self._journal.write(records)
        for record in records:
            first = record["key"] not in self._queues
            self._apply(record)
            if first:
                self._schedule_head(record["key"], now)
        await self._journal.sync()
        return len(fresh)

    async def claim(self, limit: int, wait: float) -> list[Claim]:
        deadline = time.time() + wait
        while True:
            now = time.time()
            claims = self._take_due(limit, now)
            if claims or now >= deadline:
                return claims
            self._wake.clear()
            next_due = self._ready[0][0] if self._ready else deadline
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, min(deadline, next_due) - now))
            except TimeoutError:
                pass

    def _take_due(self, limit: int, now: float) -> list[Claim]:
        claims: list[Claim] = []
        while self._ready and self._ready[0][0] <= now and len(claims) < limit:
            due, event_id = heapq.heappop(self._ready)
            entry = self._events.get(event_id)
            if entry is None or entry.died_at is not None or entry.due != due \
                    or self._queues[entry.event.key][0] != event_id:
                continue  # stale: delivered, dead, rescheduled, or not the head any more
            entry.due = now + self.lease
            heapq.heappush(self._ready, (entry.due, event_id))
            claims.append(Claim(entry.event, entry.created_at, entry.attempts))
        return claims

    async def delivered(self, claim: Claim, status: int | None = None) -> None:
        if claim.event.id not in self._events:
            return
        e = claim.event
        self._log({"op": "done", "id": e.id, "tenant": e.tenant, "key": e.key, "type": e.type,
                   "attempts": claim.attempts + 1, "status": status, "at": time.time()})
        self._schedule_head(claim.event.key, time.time())
        if self._worth_compacting() and not self._compacting:
            self._compacting = True
            try:
                await self._compact()
            finally:
                self._compacting = False

    async def retry_later(self, claim: Claim, due: float, error: str) -> None:
        entry = self._events.get(claim.event.id)
        if entry is None or entry.died_at is not None:
            return
        self._log({"op": "retry", "id": claim.event.id, "attempts": claim.attempts + 1, "due": due, "error": error})
        heapq.heappush(self._ready, (due, claim.event.id))
        self._wake.set()

    async def dead_letter(self, claim: Claim, error: str) -> None:
        entry = self._events.get(claim.event.id)
        if entry is None or entry.died_at is not None:
            return
        now = time.time()
        self._log({"op": "dead", "id": claim.event.id, "at": now, "error": error, "attempts": claim.attempts + 1})
        self._schedule_head(claim.event.key, now)
        await self._journal.sync()

    async def dead_letters(self, tenant: str) -> list[DeadLetter]:
        entries = [self._events[i] for i in self._dead.get(tenant, {})]
        return [DeadLetter(e.event, e.created_at, e.attempts, e.error, e.died_at) for e in entries]

    async def recently_delivered(self, tenant: str) -> list[Delivered]:
        horizon = time.time() - SENT_MEMORY_SECONDS
        return [Delivered(r["id"], r["type"], r["key"], r["attempts"], r["status"], r["at"])
                for r in reversed(self._delivered.get(tenant, ())) if r["at"] >= horizon]

    async def undelivered(self, tenant: str, limit: int) -> list[Undelivered]:
        entries = [self._events[i] for queue in self._queues.values() for i in queue]
        entries = sorted((e for e in entries if e.event.tenant == tenant), key=lambda e: e.created_at)[:limit]
        return [Undelivered(e.event, e.created_at, e.attempts, e.error, e.due if e.attempts else None)
                for e in entries]

    async def replay(self, tenant: str, event_id: str) -> bool:
        if event_id not in self._dead.get(tenant, {}):
            return False
        now = time.time()
        key = self._events[event_id].event.key
        first = key not in self._queues
        self._log({"op": "replay", "id": event_id, "at": now})
        if first:
            self._schedule_head(key, now)
        await self._journal.sync()
        return True

    async def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def close(self) -> None:
        await self._journal.sync()
        await self._journal.idle()
        self._journal.close()

    # -- upkeep ---------------------------------------------------------------------------------------

    def _forget_sent(self) -> None:
        horizon = time.time() - SENT_MEMORY_SECONDS
        while self._sent and next(iter(self._sent.values())) < horizon:
            self._sent.popitem(last=False)

    def _worth_compacting(self) -> bool:
        """Most lines describe events that are gone (rewriting then costs little per line dropped)."""
        kept = len(self._events) + sum(len(listed) for listed in self._delivered.values())
        return self._journal.lines > max(self.compact_min_lines, 4 * (kept + 1))

    async def _compact(self) -> None:
        await self._journal.sync()
        await self._journal.idle()
        if not self._worth_compacting():
            return
        records: list[dict] = []
        dead = [i for ids in self._dead.values() for i in ids]
        for event_id in [i for q in self._queues.values() for i in q] + dead:
            e = self._events[event_id]
            records.append({"op": "add", "id": e.event.id, "tenant": e.event.tenant, "key": e.event.key,
                            "type": e.event.type, "body": e.event.body.decode(), "at": e.created_at})
            if e.attempts:
                records.append({"op": "retry", "id": e.event.id, "attempts": e.attempts, "due": e.due,
                                "error": e.error})
            if e.died_at is not None:
                records.append({"op": "dead", "id": e.event.id, "at": e.died_at, "error": e.error,
                                "attempts": e.attempts})
        records += [r for listed in self._delivered.values() for r in listed]
        before = self._journal.lines
        try:
            self._journal.rewrite(records)
        except OSError as error:  # a full disk: keep appending to the journal as it is
            log.error("outbox journal not compacted", extra={"error": repr(error)})
            return
        log.info("outbox journal compacted", extra={"lines_before": before, "lines_after": len(records)})
