"""The outbox in Redis (distributed mode): every control plane delivers from it, workers append to it.

Keys, under `<prefix>outbox:`:

    stream          a stream of event ids ready for a first claim, read by the consumer group
                    `webhooks` (one consumer per control plane process)
    event:<id>      hash: tenant, key, type, body, created, attempts, error, died
    key:<key>       list of the key's (the call's) undelivered event ids, oldest first
    due             sorted set: id -> when it may be claimed (a retry's time, or a lease's end)
    dead:<tenant>   sorted set: id -> when it was dead-lettered
    sent:<id>       a delivered id, remembered for an hour so that it is not appended again
    delivered:<tenant>  list of the tenant's last deliveries (JSON: id, type, key, attempts, status,
                    at), newest first, for its admins

Only the head of a key's list is ever in the stream or claimable: when it is delivered or dead,
the same script puts the next one in the stream. A consumer that reads an entry takes the
event (a lease in `due`) and acknowledges the entry in one script, so an entry read by a
consumer that died before taking it stays pending in the group and is reclaimed (XAUTOCLAIM)
by another; an event whose lease ran out is claimed again from `due`. Every change is one Lua
script, so it is atomic. With Redis's append-only file on (appendonly yes), a restart of Redis
loses nothing that was acknowledged (appendfsync always also covers a crash of its host).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence

import redis.asyncio as redis
from redis.exceptions import ResponseError

from telephony.events.outbox import (
    DELIVERED_LISTED,
    SENT_MEMORY_SECONDS,
    Claim,
    DeadLetter,
    Delivered,
    OutboxEvent,
    Undelivered,
)
from telephony.redis_client import block_limit, redis_client

log = logging.getLogger(__name__)

GROUP = "webhooks"
_FIELDS = ("tenant", "key", "type", "body", "created", "attempts")

# ARGV: p, now, then (id, tenant, key, type, body) per event. Returns how many were new.
_APPEND = """
local p, now, added = ARGV[1], ARGV[2], 0
for i = 3, #ARGV, 5 do
  local id, key = ARGV[i], ARGV[i + 2]
  local ev = p .. 'event:' .. id
  if redis.call('EXISTS', ev) == 0 and redis.call('EXISTS', p .. 'sent:' .. id) == 0 then
    redis.call('HSET', ev, 'tenant', ARGV[i + 1], 'key', key, 'type', ARGV[i + 3], 'body', ARGV[i + 4],
               'created', now, 'attempts', 0)
    if redis.call('RPUSH', p .. 'key:' .. key, id) == 1 then redis.call('XADD', p .. 'stream', '*', 'id', id) end
    added = added + 1
  end
end
return added
"""

# ARGV: p, group, stream entry id, event id, now, lease end. The event's fields, or nil.
_TAKE = """
local p, id, now = ARGV[1], ARGV[4], tonumber(ARGV[5])
redis.call('XACK', p .. 'stream', ARGV[2], ARGV[3])
redis.call('XDEL', p .. 'stream', ARGV[3])
local ev = p .. 'event:' .. id
local key = redis.call('HGET', ev, 'key')
if not key or redis.call('LINDEX', p .. 'key:' .. key, 0) ~= id then return false end
local due = redis.call('ZSCORE', p .. 'due', id)
if due and tonumber(due) > now then return false end
redis.call('ZADD', p .. 'due', ARGV[6], id)
return redis.call('HMGET', ev, 'tenant', 'key', 'type', 'body', 'created', 'attempts')
"""

# ARGV: p, now, lease end, limit. {id, fields...} of each event due.
_CLAIM_DUE = """
local p = ARGV[1]
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', p .. 'due', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))) do
  local f = redis.call('HMGET', p .. 'event:' .. id, 'tenant', 'key', 'type', 'body', 'created', 'attempts')
  if f[1] then
    redis.call('ZADD', p .. 'due', ARGV[3], id)
    table.insert(out, {id, f[1], f[2], f[3], f[4], f[5], f[6]})
  else
    redis.call('ZREM', p .. 'due', id)
  end
end
return out
"""

# ARGV: p, id, 'delivered' or 'dead', now, error, seconds to remember a delivered id, attempts,
# the receiver's status ('' when there was none: not listed), deliveries listed.
_FINISH = """
local p, id, now = ARGV[1], ARGV[2], ARGV[4]
local ev = p .. 'event:' .. id
local f = redis.call('HMGET', ev, 'key', 'tenant', 'died', 'type')
if not f[1] or f[3] then return 0 end
redis.call('ZREM', p .. 'due', id)
local list = p .. 'key:' .. f[1]
redis.call('LREM', list, 1, id)
if ARGV[3] == 'delivered' then
  redis.call('DEL', ev)
  redis.call('SET', p .. 'sent:' .. id, 1, 'EX', ARGV[6])
  if ARGV[8] ~= '' then
    local listed = p .. 'delivered:' .. f[2]
    redis.call('LPUSH', listed, cjson.encode({id = id, type = f[4], key = f[1], attempts = tonumber(ARGV[7]),
                                              status = tonumber(ARGV[8]), at = tonumber(now)}))
    redis.call('LTRIM', listed, 0, tonumber(ARGV[9]) - 1)
    redis.call('EXPIRE', listed, ARGV[6])
  end
else
  redis.call('HSET', ev, 'died', now, 'error', ARGV[5], 'attempts', ARGV[7])
  redis.call('ZADD', p .. 'dead:' .. f[2], now, id)
end
local next_id = redis.call('LINDEX', list, 0)
if next_id then redis.call('XADD', p .. 'stream', '*', 'id', next_id) end
return 1
"""

# ARGV: p, id, due, attempts, error.
_RETRY = """
local ev = ARGV[1] .. 'event:' .. ARGV[2]
local f = redis.call('HMGET', ev, 'key', 'died')
if not f[1] or f[2] then return 0 end
redis.call('HSET', ev, 'attempts', ARGV[4], 'error', ARGV[5])
redis.call('ZADD', ARGV[1] .. 'due', ARGV[3], ARGV[2])
return 1
"""

# ARGV: p, tenant, id, now.
_REPLAY = """
local p, id = ARGV[1], ARGV[3]
if redis.call('ZREM', p .. 'dead:' .. ARGV[2], id) == 0 then return 0 end
local ev = p .. 'event:' .. id
redis.call('HDEL', ev, 'died', 'error')
redis.call('HSET', ev, 'attempts', 0, 'created', ARGV[4])
if redis.call('RPUSH', p .. 'key:' .. redis.call('HGET', ev, 'key'), id) == 1 then
  redis.call('XADD', p .. 'stream', '*', 'id', id)
end
return 1
"""


def _claim(event_id: str, fields: Sequence[str]) -> Claim:
    tenant, key, type_, body, created, attempts = fields
    return Claim(OutboxEvent(event_id, tenant, key, type_, body.encode()), float(created), int(attempts))


class RedisOutbox:
    def __init__(self, client: redis.Redis, prefix: str = "plexline:", lease: float = 60.0,
                 reclaim_idle: float = 30.0, consumer: str | None = None):
        """`client` must decode responses; a claim's wait is cut into blocking reads shorter than its
        timeout (`block_limit`). `reclaim_idle`: seconds after which a stream entry read by a
        consumer that never took it is read again by another."""
        self._redis = client
        self._p = f"{prefix}outbox:"
        self.lease = lease
        self.reclaim_idle = reclaim_idle
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._scripts = {name: client.register_script(source) for name, source in (
            ("append", _APPEND), ("take", _TAKE), ("claim_due", _CLAIM_DUE), ("finish", _FINISH),
            ("retry", _RETRY), ("replay", _REPLAY))}
        self._group_ready = False
        self._last_reclaim = 0.0
        self._block_limit = block_limit(client) or float("inf")

    @classmethod
    def from_url(cls, url: str, **kwargs) -> RedisOutbox:
        return cls(redis_client(url), **kwargs)

    async def append(self, events: Sequence[OutboxEvent]) -> int:
        args: list[str | float] = [self._p, time.time()]
        for e in events:
            args += [e.id, e.tenant, e.key, e.type, e.body.decode()]
        return int(await self._scripts["append"](args=args))

    async def claim(self, limit: int, wait: float) -> list[Claim]:
        await self._ensure_group()
        deadline = time.time() + wait
        while True:
            now = time.time()
            claims = await self._claim_due(limit, now)
            if now - self._last_reclaim >= self.reclaim_idle / 2 and len(claims) < limit:
                self._last_reclaim = now
                claims += await self._reclaim(limit - len(claims))
            if len(claims) < limit:
                block = None
                if not claims and deadline > now:  # wait for a new event, or until one is due
                    wait_ms = 1000 * min(deadline - now, await self._until_next_due(now), self._block_limit)
                    block = max(1, int(wait_ms))
                claims += await self._read_stream(limit - len(claims), block)
            if claims or time.time() >= deadline:
                return claims

    async def _claim_due(self, limit: int, now: float) -> list[Claim]:
        rows = await self._scripts["claim_due"](args=[self._p, now, now + self.lease, limit])
        return [_claim(row[0], row[1:]) for row in rows]

    async def _until_next_due(self, now: float) -> float:
        head = await self._redis.zrange(self._p + "due", 0, 0, withscores=True)
        return max(0.0, head[0][1] - now) if head else float("inf")

    async def _read_stream(self, count: int, block_ms: int | None) -> list[Claim]:
        reply = await self._redis.xreadgroup(GROUP, self.consumer, {self._p + "stream": ">"}, count=count,
                                             block=block_ms)
        entries = [entry for _, stream_entries in (reply or []) for entry in stream_entries]
        return await self._take(entries)

    async def _reclaim(self, count: int) -> list[Claim]:
        """Entries that another consumer read and never took (it died): take them now."""
        reply = await self._redis.xautoclaim(self._p + "stream", GROUP, self.consumer,
                                             int(self.reclaim_idle * 1000), "0-0", count=count)
        entries = reply[1]
        if entries:
            log.warning("reclaimed webhook events left by a lost control plane", extra={"events": len(entries)})
        return await self._take(entries)

    async def _take(self, entries: list) -> list[Claim]:
        if not entries:
            return []
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, fields in entries:
                await self._scripts["take"](args=[self._p, GROUP, entry_id, fields["id"], now, now + self.lease],
                                            client=pipe)
            rows = await pipe.execute()
        return [_claim(fields["id"], row) for (_, fields), row in zip(entries, rows) if row]

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._redis.xgroup_create(self._p + "stream", GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    async def delivered(self, claim: Claim, status: int | None = None) -> None:
        await self._scripts["finish"](args=[self._p, claim.event.id, "delivered", time.time(), "",
                                            int(SENT_MEMORY_SECONDS), claim.attempts + 1,
                                            "" if status is None else status, DELIVERED_LISTED])

    async def recently_delivered(self, tenant: str) -> list[Delivered]:
        horizon = time.time() - SENT_MEMORY_SECONDS
        rows = [json.loads(row) for row in await self._redis.lrange(self._p + f"delivered:{tenant}", 0, -1)]
        return [Delivered(r["id"], r["type"], r["key"], r["attempts"], r["status"], r["at"])
                for r in rows if r["at"] >= horizon]

    async def retry_later(self, claim: Claim, due: float, error: str) -> None:
        await self._scripts["retry"](args=[self._p, claim.event.id, due, claim.attempts + 1, error])

    async def dead_letter(self, claim: Claim, error: str) -> None:
        await self._scripts["finish"](args=[self._p, claim.event.id, "dead", time.time(), error,
                                            int(SENT_MEMORY_SECONDS), claim.attempts + 1, "", DELIVERED_LISTED])

    async def dead_letters(self, tenant: str) -> list[DeadLetter]:
        ids = await self._redis.zrange(self._p + f"dead:{tenant}", 0, -1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hmget(self._p + f"event:{event_id}", *_FIELDS, "error", "died")
            rows = await pipe.execute()
        letters = []
        for event_id, row in zip(ids, rows):
            if row[0] is not None:
                claim = _claim(event_id, row[:6])
                letters.append(DeadLetter(claim.event, claim.created_at, claim.attempts, row[6] or "", float(row[7])))
        return letters

    async def replay(self, tenant: str, event_id: str) -> bool:
        return bool(await self._scripts["replay"](args=[self._p, tenant, event_id, time.time()]))

    async def undelivered(self, tenant: str, limit: int) -> list[Undelivered]:
        """Every call's queue is read (as `pending` counts them): for an admin's page, not a hot path."""
        ids = []
        async for key in self._redis.scan_iter(match=self._p + "key:*", count=1000):
            ids += await self._redis.lrange(key, 0, -1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hmget(self._p + f"event:{event_id}", *_FIELDS, "error")
                pipe.zscore(self._p + "due", event_id)
            rows = await pipe.execute()
        found = []
        for event_id, row, due in zip(ids, rows[0::2], rows[1::2]):
            if row[0] == tenant:
                claim = _claim(event_id, row[:6])
                found.append(Undelivered(claim.event, claim.created_at, claim.attempts, row[6] or "",
                                         due if claim.attempts else None))
        return sorted(found, key=lambda u: u.created_at)[:limit]

    async def pending(self) -> int:
        total = 0
        async for key in self._redis.scan_iter(match=self._p + "key:*", count=1000):
            total += await self._redis.llen(key)
        return total

    async def close(self) -> None:
        await self._redis.aclose()
