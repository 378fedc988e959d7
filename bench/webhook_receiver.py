"""A real webhook receiver for the tests and the campaign: an HTTP/1.1 server on 127.0.0.1 in a thread
of its own.

It checks every delivery's signature with the Standard Webhooks reference library (not ours),
records it, and answers as the test's `behaviour` says: a status, after a delay, with a body.
`down()` closes its port (senders get connection refused) and `up()` listens on it again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import standardwebhooks


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0  # seconds before answering (longer than the sender's timeout: a timeout)
    body_bytes: int = 0  # an answer this long (a receiver that will not stop talking)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    msg_id: str
    valid: bool  # the signature checked out
    body: bytes
    host: str
    received_at: float  # time.time()
    status: int  # what the receiver answered

    @property
    def event(self) -> dict:
        return json.loads(self.body)


Behaviour = Callable[[int, str], Answer]  # (attempt number from 0, webhook-id) -> answer


class Receiver:
    def __init__(self, secret: str, behaviour: Behaviour = lambda n, msg_id: Answer()):
        self.secret = secret
        self.behaviour = behaviour
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = self._listen(0)
        self.port = self._server.server_address[1]

    def _listen(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        server.daemon_threads = True
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def __enter__(self) -> Receiver:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        if self._server is None:
            self._server = self._listen(self.port)
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="receiver", daemon=True).start()

    def down(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def accepted(self) -> list[Delivery]:
        """Deliveries answered 2xx with a valid signature, the first of each id only (deduplicated)."""
        seen: set[str] = set()
        out = []
        with self._lock:
            for d in self.deliveries:
                if d.valid and 200 <= d.status < 300 and d.msg_id not in seen:
                    seen.add(d.msg_id)
                    out.append(d)
        return out

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.accepted()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.accepted()

    async def until(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        """`wait_for` for a test whose event loop must keep running meanwhile."""
        deadline = time.monotonic() + timeout
        while len(self.accepted()) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.accepted()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                msg_id = self.headers.get("webhook-id", "")
                try:
                    standardwebhooks.Webhook(receiver.secret).verify(body, dict(self.headers), json_parse=False)
                    valid = True
                except Exception:  # any failure of the reference check
                    valid = False
                with receiver._lock:
                    number = len(receiver.deliveries)
                answer = receiver.behaviour(number, msg_id)
                status = answer.status if valid else 401
                with receiver._lock:
                    receiver.deliveries.append(Delivery(msg_id, valid, body, self.headers.get("host", ""),
                                                        time.time(), status))
                time.sleep(answer.delay)
                try:
                    self.send_response(status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(answer.body_bytes))
                    self.end_headers()
                    chunk = b"x" * 65536
                    for _ in range(answer.body_bytes // len(chunk)):
                        self.wfile.write(chunk)
                except OSError:  # the sender hung up (its timeout, or enough of the body read)
                    self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        return Handler
