"""The registry in Redis: any number of control planes and workers, sharing nothing else.

Every change is one Lua script, so it is atomic: two control planes never hold the same slot,
and a reaped worker's calls are failed exactly once. Keys (under a prefix, `plexline:` by default):

    workers                  set of worker ids
    worker:<id>              hash: address, slots, model, version, draining (0/1)
    worker:<id>:alive        the heartbeat: a string with the worker's time to live
    worker:<id>:calls        hash: call id -> reserved at (ms); its size is the worker's used slots
    call:<id>                hash: the call record; expires a while after the call finishes
    calls                    set of the call ids in progress
    tenant:<id>:calls        set of the tenant's call ids in progress
    source:<addr>:calls      set of the call ids in progress from one source (a caller's address)
    source:<addr>:attempts   sorted set: the source's admitted call attempts in its sliding window,
                             scored by when they were made (ms); expires a window after the latest
    source:<addr>:refused    set at a refusal of the source's attempts, for a window: a refusal
                             meanwhile is a repeat
    sip-dialog:<dialog>      hash: call, state (what a BYE needs) of an answered SIP dialog (Call-ID
                             and our tag); expires with the longest its call may last
    sip-dialogs              sorted set: the remembered dialogs, scored by when they expire (ms)

Times come from Redis (`TIME`), so the control planes' clocks need not agree. The scripts name
keys they compute from the prefix, which a single Redis (or a replicated one) allows; a Redis
Cluster would need the keys in one hash slot.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Concatenate, ParamSpec, TypeVar

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agent.contracts.calls import CallOutcome
from agent.contracts.errors import describe
from agent.contracts.workers import HeartbeatReply, WorkerInfo
from telephony.control.registry import (
    Attempt,
    FINISHED_CALL_TTL,
    RESERVATION_GRACE,
    CallRecord,
    DuplicateCall,
    NewCall,
    NoCapacity,
    RegistryUnavailable,
    StoredDialog,
    TenantLimitReached,
    WorkerStatus,
    worker_lost_reason,
)
from telephony.redis_client import redis_address, redis_client

P = ParamSpec("P")
R = TypeVar("R")


def _reachable(
        method: Callable[Concatenate[RedisRegistry, P], Awaitable[R]]) -> Callable[Concatenate[RedisRegistry, P], Awaitable[R]]:
    """Connection failures and timeouts become RegistryUnavailable (callers are refused, not crashed),
    whose message callers may read (an API's detail, a SIP Warning): the Redis's address and its error
    are in a note, for the logs only (`agent.contracts.errors.describe`)."""

    @functools.wraps(method)
    async def call(self: RedisRegistry, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as error:
            unavailable = RegistryUnavailable("the call registry is unreachable")
            unavailable.add_note(f"Redis at {redis_address(self.client)}: {describe(error)}")
            raise unavailable from error

    return call


_NOW_MS = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# finish(p, call_id, state, reason, now_ms, ttl_ms): 1 if the call was in progress and is now finished.
_FINISH = _NOW_MS + """
local function finish(p, call_id, state, reason, now, ttl_ms)
  local key = p .. 'call:' .. call_id
  local rec = redis.call('HMGET', key, 'state', 'tenant', 'worker', 'source')
  if rec[1] ~= 'reserved' and rec[1] ~= 'active' then return 0 end
  redis.call('HDEL', p .. 'worker:' .. rec[3] .. ':calls', call_id)
  redis.call('SREM', p .. 'calls', call_id)
  redis.call('SREM', p .. 'tenant:' .. rec[2] .. ':calls', call_id)
  if rec[4] then redis.call('SREM', p .. 'source:' .. rec[4] .. ':calls', call_id) end
  if state == 'cancelled' then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'state', state, 'reason', reason, 'ended_ms', now)
    redis.call('PEXPIRE', key, ttl_ms)
  end
  return 1
end
local function remove_worker(p, id, reason, ttl_ms)
  local w = p .. 'worker:' .. id
  local failed = {}
  local now = now_ms()
  for _, call_id in ipairs(redis.call('HKEYS', w .. ':calls')) do
    if finish(p, call_id, 'failed', reason, now, ttl_ms) == 1 then table.insert(failed, call_id) end
  end
  redis.call('DEL', w, w .. ':calls', w .. ':alive')
  redis.call('SREM', p .. 'workers', id)
  return failed
end
"""

# ARGV: prefix, call id, tenant, line, caller, callee, tenant limit, tenants, reserve percent, source,
# source limit, excluded worker ids... (the limits are NewCall's)
_RESERVE = _FINISH + """
local p, call_id, tenant, source = ARGV[1], ARGV[2], ARGV[3], ARGV[10]
local excluded = {}
for i = 12, #ARGV do excluded[ARGV[i]] = true end
local call_key = p .. 'call:' .. call_id
if redis.call('EXISTS', call_key) == 1 then return {'duplicate'} end
local tenant_key = p .. 'tenant:' .. tenant .. ':calls'
local held = redis.call('SCARD', tenant_key)
if held >= tonumber(ARGV[7]) then return {'tenant_limit'} end
local source_key = p .. 'source:' .. source .. ':calls'
if source ~= '' and redis.call('SCARD', source_key) >= tonumber(ARGV[11]) then return {'source_limit'} end
local best, best_used, best_slots
local total, free = 0, 0  -- the cluster's: live, undrained workers, and the slots taken on draining ones
for _, id in ipairs(redis.call('SMEMBERS', p .. 'workers')) do
  local w = p .. 'worker:' .. id
  if redis.call('EXISTS', w .. ':alive') == 1 then
    local info = redis.call('HMGET', w, 'slots', 'draining')
    local slots = tonumber(info[1])
    local used = redis.call('HLEN', w .. ':calls')
    if slots and info[2] == '1' then total = total + used end
    if slots and info[2] ~= '1' then
      total, free = total + slots, free + math.max(slots - used, 0)
      if used < slots and not excluded[id] then
        local better = best == nil
        if not better then
          -- least loaded: lowest used/slots, then most free slots, then lowest id
          local lhs, rhs = used * best_slots, best_used * slots
          local free, best_free = slots - used, best_slots - best_used
          better = lhs < rhs or (lhs == rhs and (free > best_free or (free == best_free and id < best)))
        end
        if better then best, best_used, best_slots = id, used, slots end
      end
    end
  end
end
if best == nil then return {'no_capacity'} end
-- the fair share (NewCall.over_fair_share): the reserve is the percent of the slots, rounded up
local reserve = math.floor((total * tonumber(ARGV[9]) + 99) / 100)
if tonumber(ARGV[8]) > 1 and free <= reserve and held * tonumber(ARGV[8]) >= total then return {'fair_share', held, total, free} end
local now = now_ms()
redis.call('HSET', p .. 'worker:' .. best .. ':calls', call_id, now)
redis.call('HSET', call_key, 'tenant', tenant, 'line', ARGV[4], 'worker', best, 'state', 'reserved',
           'caller', ARGV[5], 'callee', ARGV[6], 'created_ms', now)
redis.call('SADD', p .. 'calls', call_id)
redis.call('SADD', tenant_key, call_id)
if source ~= '' then
  redis.call('HSET', call_key, 'source', source)
  redis.call('SADD', source_key, call_id)
end
local w = redis.call('HMGET', p .. 'worker:' .. best, 'address', 'slots', 'model', 'version')
return {'ok', best, w[1], w[2], w[3], w[4]}
"""

# ARGV: prefix, source, window ms, limit, attempt id
_ADMIT_ATTEMPT = _NOW_MS + """
local key = ARGV[1] .. 'source:' .. ARGV[2] .. ':attempts'
local window, now = tonumber(ARGV[3]), now_ms()
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < tonumber(ARGV[4]) then
  redis.call('ZADD', key, now, ARGV[5])
  redis.call('PEXPIRE', key, window)
  return {1, 0, 0}
end
local left = tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) + window - now
local first = redis.call('SET', ARGV[1] .. 'source:' .. ARGV[2] .. ':refused', 1, 'PX', window, 'NX')
return {0, left, first and 1 or 0}
"""

# ARGV: prefix, call id
_ACTIVATE = """
local key = ARGV[1] .. 'call:' .. ARGV[2]
if redis.call('HGET', key, 'state') ~= 'reserved' then return 0 end
redis.call('HSET', key, 'state', 'active')
return 1
"""

# ARGV: prefix, call id, outcome (ended, failed or cancelled), reason, finished ttl ms
_RELEASE = _FINISH + """
return finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4], now_ms(), tonumber(ARGV[5]))
"""

# ARGV: prefix, id, address, slots, model, version, ttl ms, grace ms, finished ttl ms, session ids...
_HEARTBEAT = _FINISH + """
local p, id = ARGV[1], ARGV[2]
local w = p .. 'worker:' .. id
redis.call('SADD', p .. 'workers', id)
redis.call('HSET', w, 'address', ARGV[3], 'slots', ARGV[4], 'model', ARGV[5], 'version', ARGV[6])
redis.call('HSETNX', w, 'draining', '0')
redis.call('SET', w .. ':alive', '1', 'PX', ARGV[7])
local held = {}
for i = 10, #ARGV do held[ARGV[i]] = true end
local now = now_ms()
local reservations = redis.call('HGETALL', w .. ':calls')
for i = 1, #reservations, 2 do
  local call_id = reservations[i]
  if not held[call_id] and now - tonumber(reservations[i + 1]) > tonumber(ARGV[8]) then
    finish(p, call_id, 'failed', 'the worker does not hold the session', now, tonumber(ARGV[9]))
  end
end
local reply = {redis.call('HGET', w, 'draining')}
for i = 10, #ARGV do
  if redis.call('HEXISTS', w .. ':calls', ARGV[i]) == 0 then table.insert(reply, ARGV[i]) end
end
return reply
"""

# ARGV: prefix, id, draining (0/1)
_SET_DRAINING = """
local p, id = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', p .. 'workers', id) == 0 then return 0 end
redis.call('HSET', p .. 'worker:' .. id, 'draining', ARGV[3])
return 1
"""

# ARGV: prefix, id, reason, finished ttl ms
_DEREGISTER = _FINISH + """
return remove_worker(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
"""

# ARGV: prefix, finished ttl ms, reason format (%s: the worker id)
_REAP = _FINISH + """
local p = ARGV[1]
local failed = {}
for _, id in ipairs(redis.call('SMEMBERS', p .. 'workers')) do
  if redis.call('EXISTS', p .. 'worker:' .. id .. ':alive') == 0 then
    for _, call_id in ipairs(remove_worker(p, id, string.format(ARGV[3], id), tonumber(ARGV[2]))) do
      table.insert(failed, call_id)
    end
  end
end
return failed
"""


# ARGV: prefix, dialog, call id, state, ttl ms
_PUT_DIALOG = _NOW_MS + """
local p, dialog, ttl = ARGV[1], ARGV[2], tonumber(ARGV[5])
local key = p .. 'sip-dialog:' .. dialog
redis.call('HSET', key, 'call', ARGV[3], 'state', ARGV[4])
redis.call('PEXPIRE', key, ttl)
redis.call('ZADD', p .. 'sip-dialogs', now_ms() + ttl, dialog)
"""

# ARGV: prefix, dialog, state: 1 if the dialog is still remembered (and now has that state)
_UPDATE_DIALOG = """
local key = ARGV[1] .. 'sip-dialog:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('HSET', key, 'state', ARGV[3])
return 1
"""

# ARGV: prefix, dialog: {call id, state}, or nil if it is not remembered (any more)
_TAKE_DIALOG = """
local p, dialog = ARGV[1], ARGV[2]
local key = p .. 'sip-dialog:' .. dialog
local stored = redis.call('HMGET', key, 'call', 'state')
redis.call('DEL', key)
redis.call('ZREM', p .. 'sip-dialogs', dialog)
if not stored[1] then return false end
return stored
"""

# ARGV: prefix: the remembered dialogs whose calls are not in progress (the expired ones forgotten)
_ENDED_DIALOGS = _NOW_MS + """
local p = ARGV[1]
redis.call('ZREMRANGEBYSCORE', p .. 'sip-dialogs', '-inf', now_ms())
local ended = {}
for _, dialog in ipairs(redis.call('ZRANGE', p .. 'sip-dialogs', 0, -1)) do
  local call_id = redis.call('HGET', p .. 'sip-dialog:' .. dialog, 'call')
  if not call_id then
    redis.call('ZREM', p .. 'sip-dialogs', dialog)
  elseif redis.call('SISMEMBER', p .. 'calls', call_id) == 0 then
    table.insert(ended, dialog)
  end
end
return ended
"""


class RedisRegistry:
    def __init__(self, client: redis.Redis, prefix: str = "plexline:", finished_call_ttl: float = FINISHED_CALL_TTL,
                 reservation_grace: float = RESERVATION_GRACE):
        self.client = client
        self.prefix = prefix
        self._finished_ms = int(finished_call_ttl * 1000)
        self._grace_ms = int(reservation_grace * 1000)
        self._reserve = client.register_script(_RESERVE)
        self._admit_attempt = client.register_script(_ADMIT_ATTEMPT)
        self._activate = client.register_script(_ACTIVATE)
        self._release = client.register_script(_RELEASE)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._set_draining = client.register_script(_SET_DRAINING)
        self._deregister = client.register_script(_DEREGISTER)
        self._reap = client.register_script(_REAP)
        self._put_dialog = client.register_script(_PUT_DIALOG)
        self._update_dialog = client.register_script(_UPDATE_DIALOG)
        self._take_dialog = client.register_script(_TAKE_DIALOG)
        self._ended_dialogs = client.register_script(_ENDED_DIALOGS)

    @classmethod
    def from_url(cls, url: str, prefix: str = "plexline:", **kwargs) -> RedisRegistry:
        return cls(redis_client(url), prefix, **kwargs)

    # -- workers --------------------------------------------------------------------------------

    @_reachable
    async def heartbeat(self, worker: WorkerInfo, ttl: float, sessions: Collection[str]) -> HeartbeatReply:
        reply = await self._heartbeat(args=[
            self.prefix, worker.id, worker.address, worker.slots, worker.model, worker.version,
            max(int(ttl * 1000), 1), self._grace_ms, self._finished_ms, *sessions])
        return HeartbeatReply(draining=reply[0] == "1", orphans=tuple(reply[1:]))

    @_reachable
    async def set_draining(self, worker_id: str, draining: bool) -> bool:
        return bool(await self._set_draining(args=[self.prefix, worker_id, int(draining)]))

    @_reachable
    async def deregister(self, worker_id: str, reason: str) -> None:
        await self._deregister(args=[self.prefix, worker_id, reason, self._finished_ms])

    @_reachable
    async def workers(self) -> list[WorkerStatus]:
        ids = sorted(await self.client.smembers(self.prefix + "workers"))
        async with self.client.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                key = f"{self.prefix}worker:{worker_id}"
                pipe.hgetall(key).hlen(key + ":calls").exists(key + ":alive")
            replies = await pipe.execute()
        statuses = []
        for i, worker_id in enumerate(ids):
            fields, used, alive = replies[3 * i: 3 * i + 3]
            if fields:  # removed between the two reads
                info = WorkerInfo(worker_id, fields["address"], int(fields["slots"]), fields["model"], fields["version"])
                statuses.append(WorkerStatus(info, used, fields.get("draining") == "1", bool(alive)))
        return statuses

    @_reachable
    async def reap(self) -> list[CallRecord]:
        call_ids = await self._reap(args=[self.prefix, self._finished_ms, worker_lost_reason("%s")])
        return await self._records(call_ids)

    # -- calls ----------------------------------------------------------------------------------

    @_reachable
    async def reserve(self, call: NewCall, exclude: Collection[str] = ()) -> WorkerInfo:
        reply = await self._reserve(args=[self.prefix, call.call_id, call.tenant, call.line, call.caller,
                                          call.callee, call.tenant_limit, call.tenants, call.reserve_percent,
                                          call.source, call.source_limit, *exclude])
        match reply[0]:
            case "ok":
                worker_id, address, slots, model, version = reply[1:]
                return WorkerInfo(worker_id, address, int(slots), model, version)
            case "no_capacity":
                raise NoCapacity("no worker has a free slot")
            case "tenant_limit":
                raise TenantLimitReached(call.tenant)
            case "source_limit":
                raise call.source_refusal()
            case "fair_share":
                raise call.fair_share_refusal(*map(int, reply[1:]))
            case _:
                raise DuplicateCall(call.call_id)

    @_reachable
    async def admit_attempt(self, source: str, window: float, limit: int) -> Attempt:
        admitted, left_ms, first = await self._admit_attempt(
            args=[self.prefix, source, max(1, int(window * 1000)), limit, uuid.uuid4().hex])
        return Attempt(admitted=bool(admitted), retry_after=int(left_ms) / 1000, first_refusal=bool(first))

    @_reachable
    async def activate(self, call_id: str) -> bool:
        return bool(await self._activate(args=[self.prefix, call_id]))

    @_reachable
    async def cancel(self, call_id: str) -> None:
        await self._release(args=[self.prefix, call_id, "cancelled", "", self._finished_ms])

    @_reachable
    async def release(self, call_id: str, outcome: CallOutcome, reason: str = "") -> bool:
        return bool(await self._release(args=[self.prefix, call_id, outcome, reason, self._finished_ms]))

    @_reachable
    async def call(self, call_id: str) -> CallRecord | None:
        [record] = await self._records([call_id])
        return record

    @_reachable
    async def calls(self, tenant: str | None = None) -> list[CallRecord]:
        key = self.prefix + ("calls" if tenant is None else f"tenant:{tenant}:calls")
        records = await self._records(sorted(await self.client.smembers(key)))
        return [r for r in records if r is not None]

    async def _records(self, call_ids: list[str]) -> list[CallRecord | None]:
        async with self.client.pipeline(transaction=False) as pipe:
            for call_id in call_ids:
                pipe.hgetall(f"{self.prefix}call:{call_id}")
            replies = await pipe.execute()
        return [_record(call_id, fields) if fields else None for call_id, fields in zip(call_ids, replies)]

    # -- SIP dialogs -----------------------------------------------------------------------------

    @_reachable
    async def put_dialog(self, dialog: StoredDialog, ttl: float) -> None:
        await self._put_dialog(args=[self.prefix, dialog.dialog, dialog.call_id, dialog.state,
                                     max(1, int(ttl * 1000))])

    @_reachable
    async def update_dialog(self, dialog: str, state: str) -> bool:
        return bool(await self._update_dialog(args=[self.prefix, dialog, state]))

    @_reachable
    async def take_dialog(self, dialog: str) -> StoredDialog | None:
        stored = await self._take_dialog(args=[self.prefix, dialog])
        return StoredDialog(dialog, *stored) if stored else None

    @_reachable
    async def ended_dialogs(self) -> list[str]:
        return list(await self._ended_dialogs(args=[self.prefix]))

    # -- the rest of the protocol ---------------------------------------------------------------

    @_reachable
    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


def _record(call_id: str, fields: dict[str, str]) -> CallRecord:
    ended = fields.get("ended_ms")
    return CallRecord(call_id, fields["tenant"], fields["line"], fields["worker"], fields["state"],  # type: ignore[arg-type]
                      fields["caller"], fields["callee"], int(fields["created_ms"]) / 1000,
                      int(ended) / 1000 if ended else None, fields.get("reason", ""))
