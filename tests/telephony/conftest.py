"""The registry fixture: each behaviour test runs against both registries."""

import pytest
import redis.asyncio as redis

from telephony.control.memory_registry import MemoryRegistry
from telephony.control.redis_registry import RedisRegistry


@pytest.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest, redis_prefix: str):
    """Each behaviour test runs against both registries; reservations are lost after 0.2 s untaken."""
    if request.param == "memory":
        yield MemoryRegistry(reservation_grace=0.2)
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)
    registry = RedisRegistry(client, prefix=redis_prefix, reservation_grace=0.2)
    yield registry
    await registry.close()
