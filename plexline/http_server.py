"""The HTTP server of every role: uvicorn with the limits that keep one client from using it all.

uvicorn by itself waits for a request's headers forever, accepts every connection until the
process runs out of file descriptors, and reads bodies of any size; then asyncio logs each failed
accept with a traceback. Here:
- a connection must complete each request's headers within `http_header_timeout` seconds of
  opening (or of its previous response), else it is closed (slowloris);
- at most `http_max_connections` connections are open at once and at most
  `http_max_connections_per_source` from one address: one more is closed as soon as it is accepted;
  the same figure is uvicorn's `limit_concurrency` (requests beyond it get 503);
- a body larger than `http_max_body_bytes` gets 413: before anything is read when its
  Content-Length says so, else as soon as what was read passes the limit (routes may ask less);
- a WebSocket message larger than `ws_max_message_bytes` closes it (1009) instead of being buffered;
- asyncio's "out of system resource" accept errors are logged at most once per `LOG_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from typing import Any

import uvicorn
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from plexline.settings import ListenSettings

log = logging.getLogger(__name__)

LOG_EVERY = 10.0  # seconds between two logged accept failures
ASGIApp = Any


def bind(listen: ListenSettings) -> socket.socket:
    """The role's HTTP socket, bound but not listening (a connection is refused until the app has
    started). Bound before the app is built, so that what names the role's address (a worker's
    advertised URL and id, what `plexline serve` announces) has the port bound, an ephemeral one
    (`http_port` 0) too. Raises OSError when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.http_port))
    except OSError:
        sock.close()
        raise
    return sock


def serve_http(app: ASGIApp, listen: ListenSettings, sock: socket.socket) -> None:
    """Run `app` on `sock` (from `bind`) until the process is told to stop."""
    log.info("HTTP listening", extra={"host": listen.host, "port": sock.getsockname()[1]})
    uvicorn.Server(server_config(app, listen)).run(sockets=[sock])


def server_config(app: ASGIApp, listen: ListenSettings, port: int | None = None) -> uvicorn.Config:
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptErrorFilter) for f in asyncio_log.filters):
        asyncio_log.addFilter(AcceptErrorFilter())
    return uvicorn.Config(BodyLimit(app, listen.http_max_body_bytes), host=listen.host,
                          port=listen.http_port if port is None else port, log_config=None, access_log=False,
                          http=guarded_protocol(listen), limit_concurrency=listen.http_max_connections,
                          ws_max_size=listen.ws_max_message_bytes)


def guarded_protocol(listen: ListenSettings) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with a header deadline and connection caps (counts shared by
    every connection of the server)."""
    per_source: Counter[str] = Counter()
    total = [0]

    class GuardedH11Protocol(H11Protocol):
        _counted: str | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            source = self.client[0] if self.client else ""
            if total[0] >= listen.http_max_connections or per_source[source] >= listen.http_max_connections_per_source:
                transport.abort()
                return
            self._counted = source
            per_source[source] += 1
            total[0] += 1
            self._arm_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._release()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm_deadline()  # the headers are in: the app has the request

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_deadline()

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._release()  # the WebSocket protocol owns the connection from here
            super().handle_websocket_upgrade(event)

        def _arm_deadline(self) -> None:
            self._disarm_deadline()
            self._deadline = self.loop.call_later(listen.http_header_timeout, self._headers_too_slow)

        def _disarm_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_too_slow(self) -> None:
            self._deadline = None
            if self.cycle is None or self.cycle.response_complete:
                self.transport.abort()

        def _release(self) -> None:
            self._disarm_deadline()
            if self._counted is not None:
                per_source[self._counted] -= 1
                if not per_source[self._counted]:
                    del per_source[self._counted]
                total[0] -= 1
                self._counted = None

    return GuardedH11Protocol


class BodyTooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so FastAPI's body reading passes it on as it is and
    its error handling answers 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimit:
    """ASGI middleware: 413 for a request body of more than `limit` bytes, without reading it when
    Content-Length announces it, else once the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = f'{{"detail":"the request body is larger than {self.limit} bytes"}}'.encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class AcceptErrorFilter(logging.Filter):
    """Lets one of asyncio's accept failures (EMFILE, ENFILE, ENOBUFS) through per `LOG_EVERY`
    seconds, with the count of those dropped since; a flood of them once wrote 180 MB in 44 s."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -LOG_EVERY
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "out of system resource" not in str(record.msg):
            return True
        now = time.monotonic()
        if now - self._last < LOG_EVERY:
            self._dropped += 1
            return False
        record.msg = f"{record.msg} ({self._dropped} more since the last one logged)"
        record.exc_info = None
        self._last, self._dropped = now, 0
        return True
