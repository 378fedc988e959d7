"""Behaviour of the registry, the same for Redis and in memory (the `registry` fixture runs both)."""

import asyncio
import itertools

import pytest

from agent.contracts.workers import WorkerInfo
from telephony.control.registry import (
    DuplicateCall,
    NewCall,
    NoCapacity,
    TenantLimitReached,
)

pytestmark = pytest.mark.anyio

TTL = 5.0
_ids = itertools.count()


def worker(name: str, slots: int = 2) -> WorkerInfo:
    return WorkerInfo(name, f"http://127.0.0.1:9/{name}", slots, "echo", "0.1.0")


def call(tenant: str = "acme", limit: int = 100, call_id: str | None = None) -> NewCall:
    return NewCall(call_id or f"call-{next(_ids)}", tenant, "support", "+15555550999", "+15555550100", limit)


async def test_a_heartbeat_registers_the_worker(registry):
    reply = await registry.heartbeat(worker("w1", slots=4), TTL, [])

    [status] = await registry.workers()
    assert (reply.draining, reply.orphans) == (False, ())
    assert status.info == worker("w1", slots=4)
    assert (status.used, status.free, status.draining, status.alive) == (0, 4, False, True)


async def test_calls_go_to_the_least_loaded_worker(registry):
    await registry.heartbeat(worker("big", slots=4), TTL, [])
    await registry.heartbeat(worker("small", slots=2), TTL, [])

    # Load (used/slots) first, then free slots: big 0/4 = small 0/2 (big has more free), small 0/2,
    # big 1/4 < 1/2, big 2/4 = small 1/2 (big has more free), small 1/2 < 3/4, then big alone.
    chosen = [(await registry.reserve(call())).id for _ in range(6)]

    assert chosen == ["big", "small", "big", "big", "small", "big"]
    assert {s.info.id: s.used for s in await registry.workers()} == {"big": 4, "small": 2}


async def test_no_free_slot_anywhere_is_refused(registry):
    await registry.heartbeat(worker("w1", slots=1), TTL, [])
    first = call()
    await registry.reserve(first)

    with pytest.raises(NoCapacity):
        await registry.reserve(call())

    await registry.release(first.call_id, "ended")
    assert (await registry.reserve(call())).id == "w1"


async def test_a_refusing_worker_can_be_excluded(registry):
    await registry.heartbeat(worker("w1"), TTL, [])
    await registry.heartbeat(worker("w2"), TTL, [])
    new = call()

    first = await registry.reserve(new)
    await registry.cancel(new.call_id)
    second = await registry.reserve(new, exclude=[first.id])

    assert {first.id, second.id} == {"w1", "w2"}
    with pytest.raises(NoCapacity):
        await registry.reserve(call(), exclude=["w1", "w2"])
    assert {s.info.id: s.used for s in await registry.workers()} == {first.id: 0, second.id: 1}


async def test_the_tenant_limit_holds(registry):
    await registry.heartbeat(worker("w1", slots=10), TTL, [])
    held = [call("acme", limit=2) for _ in range(2)]
    for new in held:
        await registry.reserve(new)

    with pytest.raises(TenantLimitReached):
        await registry.reserve(call("acme", limit=2))
    await registry.reserve(call("globex", limit=2))
    await registry.release(held[0].call_id, "ended")
    await registry.reserve(call("acme", limit=2))


async def test_a_call_id_is_reserved_once(registry):
    await registry.heartbeat(worker("w1"), TTL, [])
    new = call()
    await registry.reserve(new)

    with pytest.raises(DuplicateCall):
        await registry.reserve(new)


async def test_a_call_goes_from_reserved_to_active_to_ended(registry):
    await registry.heartbeat(worker("w1"), TTL, [])
    new = call()
    await registry.reserve(new)
    reserved = await registry.call(new.call_id)

    assert await registry.activate(new.call_id)
    active = await registry.call(new.call_id)
    assert await registry.release(new.call_id, "ended", "caller hung up")
    assert not await registry.release(new.call_id, "failed", "too late")
    ended = await registry.call(new.call_id)

    assert (reserved.state, active.state, ended.state) == ("reserved", "active", "ended")
    assert (ended.worker, ended.tenant, ended.line, ended.caller, ended.callee) == (
        "w1", "acme", "support", "+15555550999", "+15555550100")
    assert ended.reason == "caller hung up"
    assert ended.created_at <= ended.ended_at
    assert not await registry.activate(new.call_id)
    assert await registry.calls() == []


async def test_cancel_forgets_the_reservation(registry):
    await registry.heartbeat(worker("w1"), TTL, [])
    new = call()
    await registry.reserve(new)

    await registry.cancel(new.call_id)

    assert await registry.call(new.call_id) is None
    assert (await registry.workers())[0].used == 0


async def test_calls_in_progress_are_listed_by_tenant(registry):
    await registry.heartbeat(worker("w1", slots=10), TTL, [])
    acme = [call("acme") for _ in range(2)]
    globex = call("globex")
    for new in [*acme, globex]:
        await registry.reserve(new)
    await registry.release(acme[1].call_id, "ended")

    assert [c.call_id for c in await registry.calls("acme")] == [acme[0].call_id]
    assert [c.call_id for c in await registry.calls("globex")] == [globex.call_id]
    assert await registry.calls("initech") == []
    assert sorted(c.call_id for c in await registry.calls()) == sorted([acme[0].call_id, globex.call_id])


async def test_a_draining_worker_gets_no_new_calls_and_keeps_its_own(registry):
    await registry.heartbeat(worker("w1"), TTL, [])
    await registry.heartbeat(worker("w2"), TTL, [])
    kept = call()
    holder = await registry.reserve(kept)

    assert await registry.set_draining(holder.id, True)
    others = [(await registry.reserve(call())).id for _ in range(2)]
    with pytest.raises(NoCapacity):
        await registry.reserve(call())

    assert set(others) == {"w1", "w2"} - {holder.id}
    assert (await registry.call(kept.call_id)).state == "reserved"
    assert (await registry.heartbeat(worker(holder.id), TTL, [kept.call_id])).draining
    assert await registry.set_draining(holder.id, False)
    assert (await registry.reserve(call())).id == holder.id
    assert not await registry.set_draining("nobody", True)


async def test_a_worker_whose_heartbeat_stops_is_reaped_and_its_calls_failed(registry):
    await registry.heartbeat(worker("dies"), 0.2, [])
    await registry.heartbeat(worker("lives", slots=1), TTL, [])
    lost = call()
    assert (await registry.reserve(lost)).id == "dies"
    await registry.reserve(call())  # fills "lives"

    await asyncio.sleep(0.35)
    with pytest.raises(NoCapacity):  # an expired worker gets no call, even before it is reaped
        await registry.reserve(call())
    assert not [s for s in await registry.workers() if s.info.id == "dies" and s.alive]
    failed = await registry.reap()

    assert [(c.call_id, c.state, c.reason) for c in failed] == [
        (lost.call_id, "failed", "worker dies lost: its heartbeat stopped")]
    assert (await registry.call(lost.call_id)).state == "failed"
    assert [s.info.id for s in await registry.workers()] == ["lives"]
    assert await registry.reap() == []


async def test_a_reaped_worker_that_comes_back_ends_its_orphans(registry):
    await registry.heartbeat(worker("w1"), 0.1, [])
    lost = call()
    await registry.reserve(lost)
    await asyncio.sleep(0.2)
    await registry.reap()

    reply = await registry.heartbeat(worker("w1"), TTL, [lost.call_id])

    assert reply.orphans == (lost.call_id,)
    assert [s.info.id for s in await registry.workers()] == ["w1"]


async def test_a_reservation_the_worker_never_took_is_failed(registry):
    await registry.heartbeat(worker("w1"), TTL, [])
    taken, dropped = call(), call()
    await registry.reserve(taken)
    await registry.reserve(dropped)

    assert (await registry.heartbeat(worker("w1"), TTL, [taken.call_id])).orphans == ()
    assert (await registry.call(dropped.call_id)).state == "reserved"  # within the grace
    await asyncio.sleep(0.3)
    await registry.heartbeat(worker("w1"), TTL, [taken.call_id])

    assert (await registry.call(dropped.call_id)).state == "failed"
    assert (await registry.call(taken.call_id)).state == "reserved"
    assert (await registry.workers())[0].used == 1


async def test_deregistering_fails_the_calls_left(registry):
    await registry.heartbeat(worker("w1"), TTL, [])
    left = call()
    await registry.reserve(left)

    await registry.deregister("w1", "worker shut down")

    assert await registry.workers() == []
    record = await registry.call(left.call_id)
    assert (record.state, record.reason) == ("failed", "worker shut down")


async def test_an_unreachable_redis_is_reported_as_such(free_port):
    from telephony.control.redis_registry import RedisRegistry
    from telephony.control.registry import RegistryUnavailable

    registry = RedisRegistry.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(RegistryUnavailable, match="the call registry is unreachable"):
            await registry.reserve(call())
        with pytest.raises(RegistryUnavailable):
            await registry.heartbeat(worker("w1"), TTL, [])
    finally:
        await registry.close()
