import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis.asyncio as redis

from telephony.control.memory_registry import MemoryRegistry
from telephony.control.redis_registry import RedisRegistry


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Gives a loopback port free at the time of asking."""
    return _free_port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of the tests' own on loopback: no persistence, a folder of its own."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed: scripts/test.sh installs it (Debian package redis-server)")
    port = _free_port()
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--logfile", str(folder / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_pong(port, server)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for_pong(port: int, server: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"redis-server exited with status {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    pytest.fail("redis-server did not answer PING within 10 s")


@pytest.fixture
def redis_prefix() -> str:
    """Keys of one test: tests share the server, never their keys."""
    return f"test-{uuid.uuid4().hex[:12]}:"


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
