"""SIP over UDP and TCP on one address (RFC 3261 §18): datagrams and framed stream messages in, bytes out.

`SipTransport` hands each message's bytes to its handler with the `Peer` it came from; replies go
back the way the request came (the same TCP connection, or to the UDP source address: with
`rport` that is what RFC 3581 asks, and it is what works behind a NAT). The transport owns one
task per TCP connection and cancels them all on `stop`. A stream that cannot be framed (no
Content-Length, oversized) is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from telephony.sip.message import SipParseError, frame_length

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1024
IDLE_SECONDS = 600.0  # a TCP connection with no message for this long is closed


@dataclass(frozen=True)
class Peer:
    transport: str  # "UDP" or "TCP"
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{self.host}:{self.port}"


Handler = Callable[[bytes, Peer], None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler):
        self.handler = handler

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.handler(data, Peer("UDP", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP socket error", extra={"error": repr(exc)})


class SipTransport:
    def __init__(self, host: str, port: int, handler: Handler):
        self.host = host
        self.port = port
        self.handler = handler
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[Peer, asyncio.StreamWriter] = {}
        self._readers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.handler), local_addr=(self.host, self.port))
        if self.port == 0:
            self.port = self._udp.get_extra_info("sockname")[1]
        self._tcp = await asyncio.start_server(self._accept, self.host, self.port)

    async def stop(self) -> None:
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._readers):
            task.cancel()
        if self._readers:
            await asyncio.wait(self._readers)
        if self._tcp is not None:
            await self._tcp.wait_closed()
        if self._udp is not None:
            self._udp.close()

    def send(self, data: bytes, peer: Peer) -> bool:
        """False if it could not be sent (the peer's TCP connection is gone)."""
        if peer.transport == "UDP":
            if self._udp is None:
                return False
            self._udp.sendto(data, (peer.host, peer.port))
            return True
        writer = self._connections.get(peer)
        if writer is None or writer.is_closing():
            return False
        writer.write(data)
        return True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = Peer("TCP", host, port)
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        self._readers.add(task)
        self._connections[peer] = writer
        try:
            await self._read(reader, peer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except SipParseError as error:
            log.info("closing a SIP stream that cannot be framed", extra={"peer": str(peer), "error": str(error)})
        finally:
            self._connections.pop(peer, None)
            self._readers.discard(task)
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, peer: Peer) -> None:
        buffer = bytearray()
        while True:
            while (length := frame_length(buffer)) is not None:
                message, buffer = bytes(buffer[:length]), buffer[length:]
                if message.strip():
                    self.handler(message, peer)
            chunk = await asyncio.wait_for(reader.read(65536), IDLE_SECONDS)
            if not chunk:
                return
            buffer += chunk
