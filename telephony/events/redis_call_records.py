"""Call records in Redis (distributed mode). Keys, under `<prefix>records:`:

    <tenant>:<call id>    the record (JSON), expiring after the retention period
    <tenant>              sorted set: call id -> answered at (seconds since the epoch)

A filtered listing walks the tenant's calls newest first, a page at a time, until it has enough
that match; members whose record has expired are dropped on the way.
"""

from __future__ import annotations

from datetime import datetime, timezone

import redis.asyncio as redis

from agent.contracts.events import CallEndedData
from telephony.events.call_records import CallQuery
from telephony.redis_client import redis_client

PAGE = 200


class RedisCallRecords:
    def __init__(self, client: redis.Redis, prefix: str = "plexline:", retention_seconds: float = 90 * 86_400):
        self._redis = client
        self._p = f"{prefix}records:"
        self.retention_seconds = retention_seconds

    @classmethod
    def from_url(cls, url: str, **kwargs) -> RedisCallRecords:
        return cls(redis_client(url), **kwargs)

    async def save(self, record: CallEndedData) -> None:
        ttl = int(record.answered_at.timestamp() + self.retention_seconds - datetime.now(timezone.utc).timestamp())
        if ttl <= 0:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            key = f"{self._p}{record.tenant}:{record.call_id}"
            pipe.set(key, record.model_dump_json(by_alias=True), nx=True, ex=ttl)
            pipe.zadd(f"{self._p}{record.tenant}", {record.call_id: record.answered_at.timestamp()})
            await pipe.execute()

    async def get(self, tenant: str, call_id: str) -> CallEndedData | None:
        data = await self._redis.get(f"{self._p}{tenant}:{call_id}")
        return CallEndedData.model_validate_json(data) if data else None

    async def find(self, tenant: str, query: CallQuery) -> list[CallEndedData]:
        index = f"{self._p}{tenant}"
        high = f"({query.until.timestamp()}" if query.until else "+inf"
        low = query.since.timestamp() if query.since else "-inf"
        found: list[CallEndedData] = []
        offset = 0
        while len(found) < query.limit:
            ids = await self._redis.zrevrangebyscore(index, high, low, start=offset, num=PAGE)
            if not ids:
                break
            offset += len(ids)
            values = await self._redis.mget([f"{self._p}{tenant}:{i}" for i in ids])
            expired = [i for i, v in zip(ids, values) if v is None]
            if expired:
                await self._redis.zrem(index, *expired)
                offset -= len(expired)
            for value in filter(None, values):
                record = CallEndedData.model_validate_json(value)
                if (query.line in (None, record.line)) and (query.outcome in (None, record.outcome)):
                    found.append(record)
        return found[:query.limit]

    async def forget_before(self, cutoff: datetime) -> int:
        """Records expire by themselves; this trims the indexes."""
        removed = 0
        async for index in self._redis.scan_iter(match=f"{self._p}*", _type="zset"):
            removed += await self._redis.zremrangebyscore(index, "-inf", f"({cutoff.timestamp()}")
        return removed

    async def close(self) -> None:
        await self._redis.aclose()
