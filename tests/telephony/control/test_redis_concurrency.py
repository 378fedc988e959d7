"""200 reservations at once from 4 processes against one Redis: no slot is given twice."""

import asyncio
import multiprocessing

import redis.asyncio as redis

from agent.contracts.workers import WorkerInfo
from telephony.control.redis_registry import RedisRegistry
from telephony.control.registry import NewCall, NoCapacity, TenantLimitReached

PROCESSES = 4
CALLS_PER_PROCESS = 50
WORKER_SLOTS = {"w1": 40, "w2": 30, "w3": 20, "w4": 15, "w5": 5}  # 110 slots
GLOBEX_LIMIT = 30


def reserve_in_child(url: str, prefix: str, calls: list[NewCall], start, results) -> None:
    results.put(asyncio.run(_reserve_all(url, prefix, calls, start)))


async def _reserve_all(url: str, prefix: str, calls: list[NewCall], start) -> list[tuple[str, str]]:
    client = redis.Redis.from_url(url, decode_responses=True, max_connections=len(calls))
    registry = RedisRegistry(client, prefix)
    await client.ping()
    start.wait()  # every process is connected: go together

    async def one(call: NewCall) -> tuple[str, str]:
        try:
            return call.call_id, (await registry.reserve(call)).id
        except NoCapacity:
            return call.call_id, "no capacity"
        except TenantLimitReached:
            return call.call_id, "tenant limit"

    try:
        return list(await asyncio.gather(*(one(c) for c in calls)))
    finally:
        await registry.close()


def test_200_concurrent_reservations_from_4_processes_never_double_book(redis_url, redis_prefix):
    async def register() -> None:
        registry = RedisRegistry.from_url(redis_url, prefix=redis_prefix)
        for name, slots in WORKER_SLOTS.items():
            await registry.heartbeat(WorkerInfo(name, f"http://127.0.0.1:9/{name}", slots, "echo", "0"), 60, [])
        await registry.close()

    asyncio.run(register())
    calls = [NewCall(f"p{p}-c{i}", "acme" if i % 2 else "globex", "support", "c", "d", 1000 if i % 2 else GLOBEX_LIMIT)
             for p in range(PROCESSES) for i in range(CALLS_PER_PROCESS)]
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(PROCESSES), context.Queue()
    children = [context.Process(target=reserve_in_child,
                                args=(redis_url, redis_prefix, calls[p::PROCESSES], start, results))
                for p in range(PROCESSES)]
    for child in children:
        child.start()
    outcomes = dict(pair for _ in children for pair in results.get(timeout=60))
    for child in children:
        child.join(timeout=10)
        assert child.exitcode == 0

    async def state() -> tuple[dict[str, dict[str, str]], int, int]:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        held = {name: await client.hgetall(f"{redis_prefix}worker:{name}:calls") for name in WORKER_SLOTS}
        acme = await client.scard(f"{redis_prefix}tenant:acme:calls")
        globex = await client.scard(f"{redis_prefix}tenant:globex:calls")
        await client.aclose()
        return held, acme, globex

    held, acme_held, globex_held = asyncio.run(state())
    placed = {call_id: worker for call_id, worker in outcomes.items() if worker in WORKER_SLOTS}
    globex_placed = [c for c in placed if c in {n.call_id for n in calls if n.tenant == "globex"}]

    assert len(outcomes) == PROCESSES * CALLS_PER_PROCESS
    assert len(placed) == sum(WORKER_SLOTS.values())  # demand (100 + 30) exceeds the 110 slots
    assert len(globex_placed) <= GLOBEX_LIMIT
    for name, slots in WORKER_SLOTS.items():
        mine = {c for c, w in placed.items() if w == name}
        assert set(held[name]) == mine  # what each process was told is what Redis holds
        assert len(mine) <= slots
    assert (acme_held, globex_held) == (len(placed) - len(globex_placed), len(globex_placed))
