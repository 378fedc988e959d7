"""Admission beyond the tenant's limit, the same for Redis and in memory (the `registry` fixture runs both):
a tenant's fair share of a nearly full cluster, and one source's calls and attempts."""

import asyncio
import itertools
import time

import pytest
import redis.asyncio as redis

from agent.contracts.workers import WorkerInfo
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.redis_registry import RedisRegistry
from telephony.control.registry import Attempt, FairShareExceeded, NewCall, NoCapacity, SourceLimitReached

pytestmark = pytest.mark.anyio

TTL = 5.0
_ids = itertools.count()


def worker(name: str, slots: int) -> WorkerInfo:
    return WorkerInfo(name, f"http://127.0.0.1:9/{name}", slots, "echo", "0.1.0")


def call(tenant: str, tenants: int = 2, reserve: int = 10, source: str = "", source_limit: int = 0) -> NewCall:
    return NewCall(f"call-{next(_ids)}", tenant, "support", "+15555550999", "+15555550100", 100,
                   tenants=tenants, reserve_percent=reserve, source=source, source_limit=source_limit)


async def test_a_burst_leaves_the_last_slot_to_another_tenant(registry):
    await registry.heartbeat(worker("w1", slots=4), TTL, [])
    burst = [call("acme") for _ in range(3)]
    for new in burst:  # 4, 3, 2 free: more than the reserve (10% of 4, rounded up: 1)
        await registry.reserve(new)

    with pytest.raises(FairShareExceeded, match=r"1 of 4 slots free\) and tenant acme holds its fair share"):
        await registry.reserve(call("acme"))  # holds 3, its fair share is 4 / 2
    assert (await registry.reserve(call("globex"))).id == "w1"
    with pytest.raises(NoCapacity):
        await registry.reserve(call("globex"))

    await registry.release(burst[0].call_id, "ended")
    with pytest.raises(FairShareExceeded):  # still 2 of 4, with 1 free
        await registry.reserve(call("acme"))


async def test_the_reserve_is_a_share_of_every_workers_slots(registry):
    await registry.heartbeat(worker("w1", slots=6), TTL, [])
    await registry.heartbeat(worker("w2", slots=4), TTL, [])
    for _ in range(8):  # 10 slots, 20% kept: acme takes slots while more than 2 are free
        await registry.reserve(call("acme", reserve=20))
    with pytest.raises(FairShareExceeded):
        await registry.reserve(call("acme", reserve=20))

    for _ in range(2):
        await registry.reserve(call("globex", reserve=20))
    assert sum(s.free for s in await registry.workers()) == 0


async def test_a_tenant_alone_or_without_a_reserve_takes_every_slot(registry):
    await registry.heartbeat(worker("w1", slots=4), TTL, [])
    for _ in range(2):
        await registry.reserve(call("acme", tenants=1))
    for _ in range(2):
        await registry.reserve(call("acme", tenants=2, reserve=0))

    assert [s.used for s in await registry.workers()] == [4]


async def test_one_source_holds_no_more_than_its_limit(registry):
    await registry.heartbeat(worker("w1", slots=10), TTL, [])
    held = [call("acme", source="198.51.100.7", source_limit=2) for _ in range(2)]
    for new in held:
        await registry.reserve(new)

    with pytest.raises(SourceLimitReached, match="198.51.100.7 holds 2 calls"):
        await registry.reserve(call("globex", source="198.51.100.7", source_limit=2))
    await registry.reserve(call("acme", source="203.0.113.9", source_limit=2))
    await registry.reserve(call("acme"))  # no source: a trunk's call

    await registry.release(held[0].call_id, "ended")
    await registry.reserve(call("acme", source="198.51.100.7", source_limit=2))
    await registry.cancel(held[1].call_id)
    await registry.reserve(call("acme", source="198.51.100.7", source_limit=2))


async def test_a_reaped_workers_calls_free_their_source(registry):
    await registry.heartbeat(worker("w1", slots=4), 0.2, [])
    await registry.reserve(call("acme", source="198.51.100.7", source_limit=1))
    await asyncio.sleep(0.3)
    assert len(await registry.reap()) == 1

    await registry.heartbeat(worker("w2", slots=4), TTL, [])
    await registry.reserve(call("acme", source="198.51.100.7", source_limit=1))


async def test_attempts_are_admitted_per_source_up_to_the_limit_of_their_window(registry):
    flood = [(await registry.admit_attempt("198.51.100.7", 0.5, 2)).admitted for _ in range(5)]
    other = await registry.admit_attempt("203.0.113.9", 0.5, 2)

    assert flood == [True, True, False, False, False] and other.admitted
    await asyncio.sleep(0.6)  # the refused attempts were not counted: the window is empty again
    assert [(await registry.admit_attempt("198.51.100.7", 0.5, 2)).admitted for _ in range(3)] == [True, True, False]


async def test_no_window_holds_more_attempts_than_the_limit_whatever_its_start(registry):
    """One attempt, then the rest of the limit late in its window, then a burst just past its end: a
    window from the first attempt would take the whole burst (twice the limit in 2.4 s)."""
    window, limit, source = 4.0, 5, "198.51.100.7"
    assert (await registry.admit_attempt(source, window, limit)).admitted
    await asyncio.sleep(2.0)
    late_at = time.monotonic()
    late = [(await registry.admit_attempt(source, window, limit)).admitted for _ in range(limit - 1)]
    late_end = time.monotonic()
    await asyncio.sleep(2.4)  # the first attempt has left the window; the late ones are in it for 1.6 s more
    burst = []
    for _ in range(limit):
        asked = time.monotonic()
        burst.append((asked, await registry.admit_attempt(source, window, limit), time.monotonic()))

    assert late == [True] * (limit - 1)
    assert [attempt.admitted for _, attempt, _ in burst] == [True] + [False] * (limit - 1)
    assert [attempt.first_refusal for _, attempt, _ in burst[1:]] == [True] + [False] * (limit - 2)
    for asked, attempt, answered in burst[1:]:  # until the oldest late attempt leaves the window
        assert late_at + window - answered - 0.01 <= attempt.retry_after <= late_end + window - asked + 0.01


async def test_a_minute_from_any_second_holds_at_most_the_limit_in_memory():
    now = [0.0]
    registry = MemoryRegistry(clock=lambda: now[0])

    async def burst(at: float, attempts: int) -> list[Attempt]:
        now[0] = at
        return [await registry.admit_attempt("198.51.100.7", 60.0, 30) for _ in range(attempts)]

    before = await burst(0.0, 1) + await burst(59.0, 29)
    after_the_first_minute = await burst(61.0, 30)
    a_minute_after_the_late_ones = await burst(119.0, 30)

    assert all(a.admitted for a in before)
    assert after_the_first_minute == [Attempt(True)] + [Attempt(False, 58.0, True)] + [Attempt(False, 58.0)] * 28
    assert a_minute_after_the_late_ones == [Attempt(True)] * 29 + [Attempt(False, 2.0)]  # 61's still counts
    assert await burst(121.0, 1) == [Attempt(True)]
    assert await burst(200.0, 31) == [Attempt(True)] * 30 + [Attempt(False, 60.0, True)]  # a new minute's first


async def test_two_control_planes_on_one_redis_share_the_limits(redis_url, redis_prefix):
    planes = [RedisRegistry(redis.Redis.from_url(redis_url, decode_responses=True), prefix=redis_prefix)
              for _ in range(2)]
    first, second = planes
    await first.heartbeat(worker("w1", slots=4), TTL, [])
    for _ in range(3):
        await first.reserve(call("acme", source="198.51.100.7", source_limit=3))

    with pytest.raises(FairShareExceeded):
        await second.reserve(call("acme"))
    with pytest.raises(SourceLimitReached):
        await second.reserve(call("globex", source="198.51.100.7", source_limit=3))
    assert (await second.reserve(call("globex"))).id == "w1"
    assert [(await p.admit_attempt("198.51.100.7", 60, 1)).admitted for p in planes] == [True, False]
    for plane in planes:
        await plane.close()


async def test_a_tenant_alone_takes_every_slot_left_when_its_calls_hold_a_draining_worker(registry):
    await registry.heartbeat(worker("w1", slots=4), TTL, [])
    await registry.heartbeat(worker("w2", slots=4), TTL, [])
    for _ in range(6):
        await registry.reserve(call("acme", tenants=1))
    await registry.set_draining("w1", True)  # holds some of acme's 6: more than the serving slots left
    while sum(s.free for s in await registry.workers() if not s.draining):
        await registry.reserve(call("acme", tenants=1))
    with pytest.raises(NoCapacity):
        await registry.reserve(call("acme", tenants=1))


async def test_the_slots_taken_on_a_draining_worker_count_in_the_cluster_shared(registry):
    await registry.heartbeat(worker("w1", slots=4), TTL, [])
    await registry.heartbeat(worker("w2", slots=4), TTL, [])
    for _ in range(4):
        await registry.reserve(call("acme"))  # 2 on each worker (least loaded first)
    await registry.set_draining("w1", True)  # the cluster: w2's 4 slots and w1's 2 taken, 6; acme's share 3
    await registry.reserve(call("globex"))  # 1 of w2's slots free: within the reserve (10% of 6: 1)
    with pytest.raises(FairShareExceeded, match=r"1 of 6 slots free"):
        await registry.reserve(call("acme"))  # holds 4 of 6
    assert (await registry.reserve(call("globex"))).id == "w2"
