"""A Redis that stops: the logs say what failed and where (the Redis's address, never its password)."""

import asyncio
import logging

import pytest
import redis.asyncio as redis
from redis_server import start_redis

from agent.worker import Worker, echo_model
from telephony.control.redis_registry import RedisRegistry

pytestmark = pytest.mark.anyio
PASSWORD = "pw-in-the-url-7f3a"


async def test_a_stopped_redis_is_named_in_the_log_line_without_its_password(tmp_path, caplog, free_port):
    port = free_port()
    server = start_redis(tmp_path, port, "--appendonly", "no")
    try:
        await redis.Redis(port=port).config_set("requirepass", PASSWORD)
        registry = RedisRegistry.from_url(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
        worker = Worker(echo_model(1), worker_id="w1", address="http://127.0.0.1:9", version="test",
                        registry=registry, heartbeat_ttl=0.9)
        await worker.start()
    finally:
        server.terminate()
        server.wait(timeout=10)
    with caplog.at_level(logging.WARNING, logger="agent.worker"):
        while not any(r.getMessage() == "heartbeat failed" for r in caplog.records):
            await asyncio.sleep(0.1)
    await worker.stop()
    await registry.client.aclose()
    line = next(r.error for r in caplog.records if r.getMessage() == "heartbeat failed")
    assert line.startswith(f"RegistryUnavailable: the call registry is unreachable (Redis at 127.0.0.1:{port}/0: "
                           "ConnectionError: "), line
    assert f"connecting to 127.0.0.1:{port}" in line, line
    assert all(PASSWORD not in r.getMessage() + str(r.__dict__) for r in caplog.records)
