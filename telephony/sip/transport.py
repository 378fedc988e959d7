"""SIP over UDP and TCP on one address (RFC 3261 §18), and over TLS on another port (5061):
datagrams and framed stream messages in, bytes out.

`SipTransport` hands each message's bytes to its handler with the `Peer` it came from; replies go
back the way the request came (the same TCP or TLS connection, or to the UDP source address: with
`rport` that is what RFC 3581 asks, and it is what works behind a NAT). The transport owns one
task per stream connection and cancels them all on `stop`. A stream that cannot be framed (no
Content-Length, oversized) is closed. TLS is served with `server_tls_context`: the server's
certificate, and, where trunks authenticate with client certificates, the CAs those are checked
against (a client that sends none is still served; its trunk decides, see `peer_certificate`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.contracts.tasks import cancel_and_wait
from telephony.sip.message import SipParseError, frame_length

log = logging.getLogger(__name__)

PORT_ATTEMPTS = 20  # free port numbers tried when the UDP one the OS chose is taken for TCP
MAX_CONNECTIONS = 1024
MAX_PER_SOURCE = 32  # stream connections from one address (one source cannot hold them all)
IDLE_SECONDS = 600.0  # a TCP connection with no message for this long is closed


@dataclass(frozen=True)
class Peer:
    transport: str  # "UDP", "TCP" or "TLS"
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{self.host}:{self.port}"


Handler = Callable[[bytes, Peer], None]


def server_tls_context(certificate: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2 or later with `certificate` (PEM, with its chain) and `key`. With `client_ca`, a
    client certificate is asked for and, when sent, must chain to one of those CAs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def certificate_names(certificate: dict) -> set[str]:
    """The subject's common names and DNS names of a certificate as `ssl` decodes it (lower case)."""
    names = {value for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"}
    names |= {value for kind, value in certificate.get("subjectAltName", ()) if kind in ("DNS", "URI")}
    return {n.lower() for n in names}


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler):
        self.handler = handler

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.handler(data, Peer("UDP", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP socket error", extra={"error": repr(exc)})


class SipTransport:
    def __init__(self, host: str, port: int, handler: Handler, tls: ssl.SSLContext | None = None,
                 tls_port: int = 5061, max_per_source: int = MAX_PER_SOURCE):
        """UDP and TCP on `port`; with a `tls` context, TLS on `tls_port` too (0: any free port)."""
        self.max_per_source = max_per_source
        self._per_source: Counter[str] = Counter()
        self.host = host
        self.port = port
        self.handler = handler
        self.tls = tls
        self.tls_port = tls_port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tls: asyncio.Server | None = None
        self._connections: dict[Peer, asyncio.StreamWriter] = {}
        self._readers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """UDP and TCP on one port; port 0 takes a number free for both (the OS picks it for UDP, and
        another is tried when its TCP twin is taken)."""
        loop = asyncio.get_running_loop()
        wanted = self.port
        for attempt in range(PORT_ATTEMPTS if wanted == 0 else 1):
            self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.handler),
                                                               local_addr=(self.host, wanted))
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._accept_tcp, self.host, self.port)
                break
            except OSError:
                self._udp.close()
                if wanted != 0 or attempt == PORT_ATTEMPTS - 1:
                    raise
        if self.tls is not None:
            self._tls = await asyncio.start_server(self._accept_tls, self.host, self.tls_port, ssl=self.tls,
                                                   ssl_handshake_timeout=10.0)
            self.tls_port = self._tls.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        servers = [s for s in (self._tcp, self._tls) if s is not None]
        for server in servers:
            server.close()
        await cancel_and_wait(*self._readers)  # each reads in asyncio.wait_for, which can lose a cancellation
        for server in servers:
            await server.wait_closed()
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

    def port_for(self, transport: str) -> int:
        """The port of ours that `transport` reaches (for Via and Contact)."""
        return self.tls_port if transport == "TLS" else self.port

    def peer_certificate(self, peer: Peer) -> dict | None:
        """The certificate a TLS peer authenticated with (verified against the client CAs), if any."""
        writer = self._connections.get(peer) if peer.transport == "TLS" else None
        return writer.get_extra_info("peercert") if writer is not None else None

    async def _accept_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._accept(reader, writer, "TCP")

    async def _accept_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._accept(reader, writer, "TLS")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, transport: str) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = Peer(transport, host, port)
        if len(self._connections) >= MAX_CONNECTIONS or self._per_source[host] >= self.max_per_source:
            writer.close()
            return
        task = asyncio.current_task()
        self._readers.add(task)
        self._connections[peer] = writer
        self._per_source[host] += 1
        try:
            await self._read(reader, peer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except SipParseError as error:
            log.info("closing a SIP stream that cannot be framed", extra={"peer": str(peer), "error": str(error)})
        finally:
            self._connections.pop(peer, None)
            self._per_source[host] -= 1
            if not self._per_source[host]:
                del self._per_source[host]
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
