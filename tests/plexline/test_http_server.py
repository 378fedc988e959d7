"""The HTTP server's limits against real sockets: slow headers, too many connections, large bodies."""

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from plexline.http_server import AcceptErrorFilter, server_config
from plexline.settings import ListenSettings

pytestmark = pytest.mark.anyio
LIMITS = ListenSettings(host="127.0.0.1", http_port=0, http_max_body_bytes=4096, http_header_timeout=0.5,
                        http_max_connections=6, http_max_connections_per_source=3)


def app() -> FastAPI:
    app = FastAPI()
    app.state.bodies = 0

    @app.get("/ping")
    async def ping() -> dict:
        return {"pong": True}

    @app.post("/echo")
    async def echo(payload: dict) -> dict:
        app.state.bodies += 1
        return {"keys": len(payload)}

    return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int, FastAPI]]:
    served = app()
    uv = uvicorn.Server(server_config(served, LIMITS, port=0))
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.01)
    port = uv.servers[0].sockets[0].getsockname()[1]
    yield "127.0.0.1", port, served
    uv.should_exit = uv.force_exit = True
    await asyncio.wait_for(task, 5)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closed the connection within `seconds` (its end, or a reset)."""
    try:
        await asyncio.wait_for(reader.read(), seconds)
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_a_connection_that_never_finishes_its_headers_is_closed(server):
    host, port, _ = server
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n")  # ... and never the blank line
    await writer.drain()
    for _ in range(3):  # a byte now and then does not keep it open
        await asyncio.sleep(0.2)
        writer.write(b"X-a: b\r\n")
    assert await closed_within(reader, 1.5)
    writer.close()


async def test_a_kept_alive_connection_gets_the_same_deadline_after_its_answer(server):
    host, port, _ = server
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /ping HTTP/1.1\r\n")
    assert await closed_within(reader, 1.5)
    writer.close()


async def test_one_source_holds_at_most_its_share_of_connections(server):
    host, port, _ = server
    held = [await asyncio.open_connection(host, port) for _ in range(3)]
    reader, writer = await asyncio.open_connection(host, port)
    assert await closed_within(reader, 0.3)  # the fourth from 127.0.0.1
    writer.close()

    held_reader, held_writer = held[0]
    held_writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await held_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")  # those held still work
    for _, w in held:
        w.close()
    await asyncio.sleep(0.1)
    async with httpx.AsyncClient() as client:  # and once they are gone, a new one is served
        assert (await client.get(f"http://{host}:{port}/ping")).status_code == 200


async def test_the_server_holds_at_most_its_connections_from_every_source(server):
    host, port, _ = server
    held = []
    for source in ("127.0.0.2", "127.0.0.3"):
        for _ in range(3):
            held.append(await asyncio.open_connection(host, port, local_addr=(source, 0)))
    reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.4", 0))
    assert await closed_within(reader, 0.3)
    writer.close()
    for _, w in held:
        w.close()


async def test_a_body_announced_too_large_gets_413_before_it_is_sent(server):
    host, port, served = server
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 300000000\r\n\r\n")  # not a byte of it follows
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 413")
    assert served.state.bodies == 0
    writer.close()


async def test_a_chunked_body_is_cut_off_with_413_once_it_passes_the_limit(server):
    host, port, served = server

    async def chunks():
        yield b'{"a": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    async with httpx.AsyncClient() as client:
        response = await client.post(f"http://{host}:{port}/echo", content=chunks(),
                                     headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert len(response.content) < 200 and served.state.bodies == 0


async def test_a_body_within_the_limit_is_served(server):
    host, port, _ = server
    async with httpx.AsyncClient() as client:
        response = await client.post(f"http://{host}:{port}/echo", json={"a": "x" * 3000})
    assert response.json() == {"keys": 1}


def test_accept_failures_are_logged_once_per_interval(caplog):
    logger = logging.getLogger("test.asyncio")
    logger.addFilter(AcceptErrorFilter())
    with caplog.at_level(logging.ERROR, logger="test.asyncio"):
        for _ in range(1000):
            logger.error("socket.accept() out of system resource", exc_info=OSError(24, "Too many open files"))
        logger.error("something else")
    assert [r.getMessage() for r in caplog.records] == [
        "socket.accept() out of system resource (0 more since the last one logged)", "something else"]
