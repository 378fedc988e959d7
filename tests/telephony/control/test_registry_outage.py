"""A Redis restart with calls up: the first commands after it do not fail on the connections Redis
closed; heartbeats missed while the registry was down do not make the control plane reap the
workers and fail their calls; a lost call's end that cannot be reported at once is reported on a
later pass."""

import asyncio
import contextlib
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from agent.contracts.workers import WorkerInfo
from bench.cluster import Child, redis_child, start_redis
from bench.serving import free_port
from personas import EXAMPLE_TENANTS
from personas.store import TenantStore
from telephony.control.control_plane import ControlPlane
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.redis_registry import RedisRegistry
from telephony.control.registry import NewCall
from telephony.control.settings import Settings
from telephony.control.worker_client import HttpWorkerClient
from telephony.events.call_history import open_call_history
from telephony.events.redis_call_records import RedisCallRecords
from telephony.events.redis_outbox import RedisOutbox

pytestmark = pytest.mark.anyio

TTL = 3.0
WORKER = WorkerInfo("w1", "http://127.0.0.1:9", 2, "echo", "0.1.0")


def control_plane(registry, tmp_path, **kwargs) -> ControlPlane:
    settings = Settings(personas_dir=EXAMPLE_TENANTS, operator_token=SecretStr("o" * 32),
                        worker_secret=SecretStr("w" * 32), heartbeat_ttl=TTL, reap_interval=0.1,
                        data_dir=tmp_path / "data", shutdown_grace=0)
    return ControlPlane(settings, TenantStore(EXAMPLE_TENANTS), registry, HttpWorkerClient("w" * 32), **kwargs)


async def beat_forever(registry: RedisRegistry, sessions: list[str], paused: asyncio.Event) -> None:
    """The worker's heartbeat, every third of its life, unless `paused`; failures are retried."""
    while True:
        if not paused.is_set():
            with contextlib.suppress(Exception):
                await registry.heartbeat(WORKER, TTL, sessions)
        await asyncio.sleep(TTL / 3)


@dataclass
class RedisServer:
    child: Child
    port: int
    url: str

    async def restart(self) -> None:
        self.child.kill()
        await start_redis(self.child, self.port)


@pytest.fixture
async def redis_server(tmp_path):
    """A redis-server of the test's own, with its append-only file, to kill and start again."""
    port = free_port()
    child = redis_child(tmp_path, port)
    await start_redis(child, port)
    yield RedisServer(child, port, f"redis://127.0.0.1:{port}/0")
    child.stop()


async def test_the_first_commands_after_a_redis_restart_succeed(redis_server):
    url = redis_server.url
    registry, records = RedisRegistry.from_url(url), RedisCallRecords.from_url(url)
    outbox = RedisOutbox.from_url(url)
    uses = [lambda: registry.heartbeat(WORKER, TTL, []), registry.workers, lambda: records.get("acme", "x"),
            outbox.pending]
    try:
        for _ in range(2):  # each pool holds several connections
            await asyncio.gather(*(use() for use in uses for _ in range(4)))
            await redis_server.restart()
            results = await asyncio.gather(*(use() for use in uses for _ in range(4)), return_exceptions=True)
            assert not [r for r in results if isinstance(r, Exception)]
    finally:
        await asyncio.gather(registry.close(), records.close(), outbox.close())


async def test_workers_are_not_reaped_for_the_heartbeats_missed_while_redis_restarted(redis_server, tmp_path):
    redis, url = redis_server.child, redis_server.url
    worker_side, plane_side = RedisRegistry.from_url(url), RedisRegistry.from_url(url)
    await worker_side.heartbeat(WORKER, TTL, [])
    await plane_side.reserve(NewCall("call-1", "acme", "support", "+15555550999", "+15555550100", 10))
    await plane_side.activate("call-1")
    paused = asyncio.Event()
    heartbeat = asyncio.ensure_future(beat_forever(worker_side, ["call-1"], paused))
    plane = control_plane(plane_side, tmp_path)
    await plane.start()
    try:
        await asyncio.sleep(TTL + 0.5)  # the control plane is past its own start
        redis.kill()
        await asyncio.sleep(TTL + 0.5)  # the worker's last heartbeat has expired
        paused.set()  # its first heartbeat after the restart comes 2 s late (a retry's back-off)
        await start_redis(redis, redis_server.port)
        await asyncio.sleep(2.0)
        paused.clear()
        await asyncio.sleep(TTL)
        call = await plane_side.call("call-1")
        assert call is not None and call.state == "active", call
        assert [w.info.id for w in await plane_side.workers()] == ["w1"]

        paused.set()  # a worker that stops beating is still reaped, a heartbeat's life later
        await asyncio.sleep(2 * TTL)
        assert (await plane_side.call("call-1")).state == "failed"
    finally:
        heartbeat.cancel()
        await plane.stop()
        await worker_side.close()


class FlakyHistory:
    """The call history, unreachable for its first `failures` lost calls."""

    def __init__(self, history, failures: int):
        self.history, self.failures = history, failures

    def __getattr__(self, name):
        return getattr(self.history, name)

    async def publish_lost(self, call, persona) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the call history is unreachable")
        await self.history.publish_lost(call, persona)


async def test_a_lost_calls_end_that_cannot_be_reported_at_once_is_reported_later(tmp_path):
    registry = MemoryRegistry()
    history = open_call_history(None, "", tmp_path / "recordings", data_dir=tmp_path / "data")
    plane = control_plane(registry, tmp_path, history=FlakyHistory(history, failures=2))
    await registry.heartbeat(WORKER, 0.2, [])
    await registry.reserve(NewCall("call-1", "acme", "support", "+15555550999", "+15555550100", 10))
    await registry.activate("call-1")
    await plane.start()
    try:
        for _ in range(100):
            if await history.records.get("acme", "call-1") is not None:
                break
            await asyncio.sleep(0.1)
        record = await history.records.get("acme", "call-1")
        assert record is not None and record.outcome == "failed" and "w1 lost" in record.reason
    finally:
        await plane.stop()
