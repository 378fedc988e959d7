"""A Redis that stops answering fails each store's operations within the client's timeout (no
await hangs for ever), and the same stores work again once it answers."""

import asyncio
import json
import signal
import socket
from collections.abc import Iterator

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis_server import start_redis

from telephony.control.redis_registry import RedisRegistry
from telephony.control.registry import RegistryUnavailable
from telephony.events.outbox import OutboxEvent
from telephony.events.redis_call_records import RedisCallRecords
from telephony.events.redis_outbox import RedisOutbox
from telephony.redis_client import TIMEOUT

pytestmark = pytest.mark.anyio


def event(name: str) -> OutboxEvent:
    return OutboxEvent(f"msg_{name}", "acme", f"call-{name}", "call.ended", json.dumps({"n": name}).encode())


class Stores:
    """The three stores plexline keeps in Redis, each opened as the CLI opens it (`from_url`)."""

    def __init__(self, url: str):
        self.outbox = RedisOutbox.from_url(url)
        self.records = RedisCallRecords.from_url(url)
        self.registry = RedisRegistry.from_url(url)

    def operations(self, name: str) -> list:
        return [self.outbox.append([event(name)]), self.outbox.claim(1, wait=0),
                self.records.get("acme", f"call-{name}"), self.registry.workers()]

    async def close(self) -> None:
        for store in (self.outbox, self.records, self.registry):
            await store.close()


async def each_fails_within_the_timeout(operations: list) -> None:
    """Run at once; each must raise Redis's timeout (the registry's: RegistryUnavailable) well within
    three timeouts. A hung one ends in asyncio's TimeoutError, which fails the test."""

    async def fails(operation) -> None:
        with pytest.raises((RedisTimeoutError, RegistryUnavailable)):
            await asyncio.wait_for(operation, 3 * TIMEOUT)

    await asyncio.gather(*(fails(op) for op in operations))


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A TCP server that never answers: the kernel completes each connection, nothing reads or writes."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"


async def test_a_server_that_never_answers_fails_every_operation_within_the_timeout(black_hole):
    stores = Stores(black_hole)
    try:
        await each_fails_within_the_timeout(stores.operations("lost"))
    finally:
        await stores.close()


async def test_a_stopped_redis_fails_every_operation_within_the_timeout_and_serves_again_once_continued(
        tmp_path, free_port):
    port = free_port()
    server = start_redis(tmp_path, port, "--appendonly", "no")
    stores = Stores(f"redis://127.0.0.1:{port}/0")
    try:
        await asyncio.gather(*stores.operations("before"))  # connections open and in use
        server.send_signal(signal.SIGSTOP)
        try:
            await each_fails_within_the_timeout(stores.operations("during"))
        finally:
            server.send_signal(signal.SIGCONT)
        appended, _, record, workers = await asyncio.gather(*stores.operations("after"))
        assert (appended, record, workers) == (1, None, [])
    finally:
        await stores.close()
        server.terminate()
        server.wait()
