"""A SIP caller over UDP for benchmarks and tests: INVITE with a PCMU offer, ACK, audio both ways in
real time (bench.echo_latency's RtpCaller, which stamps each packet that comes back), then BYE.

A trunk's view of the call: what status the INVITE got (and its Retry-After, when refused), and what
came back over RTP. The caller answers a BYE from the line with 200. Its offer may name another port
than its own (a relay that impairs the path), and inside the call it can offer again (re-INVITE) and
send any request (the campaign's attacks on a call's own dialog). Requests are sent again every
half second until answered (RFC 3261's timers A and E, simplified: loopback loses nothing, a busy
server may answer late).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.echo_latency import RATE, RtpCaller, codec_context, decode
from telephony.sip.message import SipParseError, SipRequest, SipResponse, parse_message
from telephony.sip.sdp import SessionDescription

RETRANSMIT = 0.5  # seconds between copies of an unanswered request
GIVE_UP = 32.0  # seconds (64 T1) without a final response


@dataclass(frozen=True)
class Refusal:
    status: int
    retry_after: str | None  # the header as written, or None


class _Signalling(asyncio.DatagramProtocol):
    """The caller's SIP socket: responses go to a queue; a BYE from the line is answered at once."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.hung_up_by_line = asyncio.Event()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            message = parse_message(data)
        except SipParseError:  # an answer to a request the campaign damaged on purpose
            return
        if isinstance(message, SipResponse):
            self.responses.put_nowait(message)
        elif message.method == "BYE":
            self.hung_up_by_line.set()
            self.transport.sendto(_ok(message), addr)


def _ok(request: SipRequest) -> bytes:
    names = ("Via", "From", "To", "Call-ID", "CSeq")
    head = [f"{name}: {value}" for name, value in request.headers if name in names]
    return ("\r\n".join(["SIP/2.0 200 OK", *head, "Content-Length: 0"]) + "\r\n\r\n").encode()


class SipCall:
    """One call from `caller` (a number) to `dialled` at the SIP server `server` (host, port)."""

    def __init__(self, server: tuple[str, int], dialled: str, caller: str, host: str = "127.0.0.1"):
        self.server, self.dialled, self.caller, self.host = server, dialled, caller, host
        self.call_id = f"{secrets.token_hex(8)}@bench"
        self.tag = secrets.token_hex(4)
        self.to_tag = ""
        self.media = RtpCaller("PCMU")
        self.remote_media: tuple[str, int] | None = None
        self._sip = _Signalling()
        self._transports: list[asyncio.BaseTransport] = []
        self._cseq = 1
        self.media_port = 0  # the port its offer named

    @property
    def hung_up_by_line(self) -> asyncio.Event:
        return self._sip.hung_up_by_line

    async def start(self, media_port: int | None = None) -> Refusal | None:
        """INVITE and ACK; None when answered, else the refusal (the call is then closed). The offer
        names `media_port` (default: the caller's own RTP socket)."""
        loop = asyncio.get_running_loop()
        sip, _ = await loop.create_datagram_endpoint(lambda: self._sip, local_addr=(self.host, 0))
        rtp, _ = await loop.create_datagram_endpoint(lambda: self.media, local_addr=(self.host, 0))
        self._transports += [sip, rtp]
        self.port, rtp_port = sip.get_extra_info("sockname")[1], rtp.get_extra_info("sockname")[1]
        self.media_port = media_port or rtp_port
        branch = self._branch()
        final = await self._transact(self._invite(branch, self.media_port), "INVITE", 1)
        self.to_tag = _to_tag(final)
        if final.status >= 300:
            self._send(self._request("ACK", branch=branch, cseq=1))  # the INVITE's own transaction
            await self.close()
            return Refusal(final.status, final.headers.get("Retry-After"))
        answer = SessionDescription.parse(final.body)
        media = answer.media[0]
        self.remote_media = (media.connection or answer.connection or self.server[0], media.port)
        self._send(self._request("ACK", branch=self._branch(), cseq=1))
        return None

    async def talk(self, pcm: np.ndarray) -> float:
        """Send `pcm` (int16 at 8 kHz) in real time; the loop time of its first packet."""
        assert self.remote_media is not None, "the call was not answered"
        return await self.media.play(pcm, self.remote_media)

    def heard(self) -> tuple[list[np.ndarray], list[float], list[float]]:
        """What came back, packet by packet: the decoded 20 ms frames, their media times and their
        arrival times (seconds; media times from the first packet's RTP timestamp)."""
        packets = self.media.packets
        decoder = codec_context("PCMU", "r")
        first = packets[0].timestamp if packets else 0
        return ([decode(decoder, p.payload) for p in packets],
                [((p.timestamp - first) & 0xFFFFFFFF) / RATE for p in packets], list(self.media.arrival))

    async def hang_up(self) -> int:
        """BYE (unless the line hung up first); the status it got, or 200 for the line's own BYE."""
        status = 200
        if not self.hung_up_by_line.is_set():
            self._cseq += 1
            status = (await self._transact(self._request("BYE", branch=self._branch(), cseq=self._cseq), "BYE",
                                           self._cseq)).status
        await self.close()
        return status

    async def reinvite(self, sdp: bytes) -> int:
        """Offer `sdp` (whatever it says) inside the call and acknowledge the answer; its status."""
        self._cseq += 1
        branch = self._branch()
        request = self._request("INVITE", branch, self._cseq, ("Content-Type: application/sdp",), sdp)
        final = await self._transact(request, "INVITE", self._cseq)
        self._send(self._request("ACK", branch=branch if final.status >= 300 else self._branch(), cseq=self._cseq))
        return final.status

    def send(self, method: str, body: bytes = b"", damage: Callable[[bytes], bytes] | None = None) -> None:
        """A request inside the call, its answer not awaited; `damage` mangles it first."""
        self._cseq += 1
        request = self._request(method, self._branch(), self._cseq, body=body)
        self._send(damage(request) if damage else request)

    async def close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports = []

    async def _transact(self, request: bytes, method: str, cseq: int) -> SipResponse:
        """Send `request` until a response, then wait for its final one."""
        loop = asyncio.get_running_loop()
        deadline, answered = loop.time() + GIVE_UP, False
        while loop.time() < deadline:
            if not answered:
                self._send(request)
            try:
                response = await asyncio.wait_for(self._sip.responses.get(), RETRANSMIT)
            except TimeoutError:
                continue
            if response.call_id != self.call_id or response.cseq != (cseq, method):
                continue
            answered = True
            if response.status >= 200:
                return response
        raise TimeoutError(f"no final response to {method} in {GIVE_UP:g} s")

    def _send(self, data: bytes) -> None:
        self._transports[0].sendto(data, self.server)

    def _branch(self) -> str:
        return "z9hG4bK-" + secrets.token_hex(6)

    def _request(self, method: str, branch: str, cseq: int, extra: tuple[str, ...] = (), body: bytes = b"") -> bytes:
        host, port = self.server
        to_tag = f";tag={self.to_tag}" if self.to_tag else ""
        lines = [f"{method} sip:{self.dialled}@{host}:{port} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport",
                 f"From: <sip:{self.caller}@{self.host}>;tag={self.tag}",
                 f"To: <sip:{self.dialled}@{host}:{port}>{to_tag}", f"Call-ID: {self.call_id}",
                 f"CSeq: {cseq} {method}", f"Contact: <sip:{self.caller}@{self.host}:{self.port}>",
                 "Max-Forwards: 70", *extra, f"Content-Length: {len(body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def offer(self, rtp_port: int) -> bytes:
        """A PCMU offer with the media at `rtp_port` of the caller's address."""
        return (f"v=0\r\no=bench 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
                f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n").encode()

    def _invite(self, branch: str, rtp_port: int) -> bytes:
        return self._request("INVITE", branch, 1, ("Content-Type: application/sdp",), self.offer(rtp_port))


def _to_tag(response: SipResponse) -> str:
    to = response.headers.get("To") or ""
    return to.split(";tag=", 1)[1].split(";")[0] if ";tag=" in to else ""
