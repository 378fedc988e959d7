"""Call records: what is kept of each finished call (the data of its `call.ended` event, transcript
included), for the admin API to list with filters and to fetch one by one.

Two stores behave the same: `SqliteCallRecords` (embedded mode: a file beside the outbox) and
`telephony.events.redis_call_records.RedisCallRecords` (distributed mode). A record is saved once: the
first `call.ended` of a call wins, as it does in the outbox. Records older than the retention
period are forgotten.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from agent.contracts.events import CallEndedData, Outcome


@dataclass(frozen=True)
class CallQuery:
    since: datetime | None = None  # answered at or after
    until: datetime | None = None  # answered before
    line: str | None = None
    outcome: Outcome | None = None
    limit: int = 100


class CallRecordStore(Protocol):
    async def save(self, record: CallEndedData) -> None: ...

    async def get(self, tenant: str, call_id: str) -> CallEndedData | None: ...

    async def find(self, tenant: str, query: CallQuery) -> list[CallEndedData]:
        """The tenant's records that match, the most recently answered first."""

    async def forget_before(self, cutoff: datetime) -> int:
        """Drop the records of calls answered before `cutoff`; returns how many."""

    async def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    tenant TEXT NOT NULL, call_id TEXT NOT NULL, line TEXT NOT NULL, outcome TEXT NOT NULL,
    answered_at REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (tenant, call_id));
CREATE INDEX IF NOT EXISTS calls_by_time ON calls (tenant, answered_at);
"""


class SqliteCallRecords:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    async def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        def run() -> list[tuple]:
            with self._lock:
                cursor = self._db.execute(sql, args)
                return cursor.fetchall() if cursor.description else [(cursor.rowcount,)]
        return await asyncio.to_thread(run)

    async def save(self, record: CallEndedData) -> None:
        await self._run("INSERT OR IGNORE INTO calls VALUES (?, ?, ?, ?, ?, ?)",
                        (record.tenant, record.call_id, record.line, record.outcome,
                         record.answered_at.timestamp(), record.model_dump_json(by_alias=True)))

    async def get(self, tenant: str, call_id: str) -> CallEndedData | None:
        rows = await self._run("SELECT data FROM calls WHERE tenant = ? AND call_id = ?", (tenant, call_id))
        return CallEndedData.model_validate_json(rows[0][0]) if rows else None

    async def find(self, tenant: str, query: CallQuery) -> list[CallEndedData]:
        sql, args = "SELECT data FROM calls WHERE tenant = ?", [tenant]
        for clause, value in (("answered_at >= ?", query.since and query.since.timestamp()),
                              ("answered_at < ?", query.until and query.until.timestamp()),
                              ("line = ?", query.line), ("outcome = ?", query.outcome)):
            if value is not None:
                sql += f" AND {clause}"
                args.append(value)
        rows = await self._run(sql + " ORDER BY answered_at DESC LIMIT ?", (*args, query.limit))
        return [CallEndedData.model_validate_json(data) for (data,) in rows]

    async def forget_before(self, cutoff: datetime) -> int:
        return (await self._run("DELETE FROM calls WHERE answered_at < ?", (cutoff.timestamp(),)))[0][0]

    async def close(self) -> None:
        with self._lock:
            self._db.close()
