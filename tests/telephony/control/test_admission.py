"""Admission beyond the tenant's limit, the same for Redis and in memory (the `registry` fixture runs both):
a tenant's fair share of a nearly full cluster, and one source's calls and attempts."""

import asyncio
import itertools

import pytest
import redis.asyncio as redis

from agent.contracts.workers import WorkerInfo
from telephony.control.redis_registry import RedisRegistry
from telephony.control.registry import FairShareExceeded, NewCall, NoCapacity, SourceLimitReached

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


async def test_attempts_are_counted_per_source_in_windows(registry):
    counts = [(await registry.count_attempt("198.51.100.7", 0.5))[0] for _ in range(3)]
    other, left = await registry.count_attempt("203.0.113.9", 0.5)

    assert counts == [1, 2, 3] and other == 1 and 0 < left <= 0.5
    await asyncio.sleep(0.6)
    assert (await registry.count_attempt("198.51.100.7", 0.5))[0] == 1


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
    assert [(await p.count_attempt("198.51.100.7", 60))[0] for p in planes] == [1, 2]
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
