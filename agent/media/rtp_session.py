"""A call's RTP media leg on the worker: the caller's audio as a track in, the agent's voice out.

`RtpSession` owns a pair of UDP sockets (RTP on an even port, RTCP on the next). Caller packets
go through a jitter buffer and are decoded (G.711, G.722 at 16 kHz, Opus) on a 20 ms playout
clock: `caller_track` is an aiortc `MediaStreamTrack` of those frames, timestamped by that clock,
so `agent.media.bridge.TrackBridge` moves them into the engine slot and conceals a lost packet as
it does for every transport (a lost packet is a break in the timestamps).
The agent's frames (`agent.media.bridge.AgentTrack`, already paced) are encoded and sent as 20 ms
packets with consecutive sequence numbers and timestamps, to where the caller's RTP comes from
(symmetric RTP: behind a NAT that is the only address that works) or, until then, to the address
in its SDP. RTCP sender reports go out every few seconds. Telephone events (RFC 4733) become
digits for `on_dtmf`. A leg keyed for SRTP (`spec.srtp`) protects every RTP and RTCP packet it
sends and drops any the caller sends that fail authentication. When the caller's RTP stops for `rtp_timeout` seconds while it should be
sending, the caller's track ends, and with it the call.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc.clock import current_ntp_time
from aiortc.codecs import get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import (
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
)

from agent.contracts.media import RtpLegSpec
from agent.engine.clock import CallSlot
from agent.media.bridge import AgentTrack, TrackBridge, quiet
from agent.media.dtmf import DtmfDetector, DtmfEvent
from agent.media.g711 import G711Encoder
from agent.media.g722 import G722Decoder, G722Encoder
from agent.media.jitter import JitterBuffer, PlayoutDepth
from agent.media.srtp import SrtpContext, SrtpError

log = logging.getLogger(__name__)

PACKET_SECONDS = 0.020
RTCP_INTERVAL = 5.0
PLAYOUT_MARGIN = 0.010  # each packet is played this long after it is due to arrive: a little early or late
RELATCH_SECONDS = 2.0  # a new source is followed once the latched one has been silent this long

DtmfCallback = Callable[[str], None]


@dataclass
class RtpStats:
    packets_sent: int = 0
    octets_sent: int = 0
    packets_received: int = 0
    octets_received: int = 0
    rejected: int = 0  # datagrams that were not RTP of the negotiated types (or not authentic SRTP)
    lost: int = 0  # 20 ms packets lost or undecodable (the bridge conceals them)
    rtcp_sent: int = 0
    rtcp_received: int = 0


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]):
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable: the caller is not there yet
        log.debug("RTP socket error", extra={"error": repr(exc)})


def _codec(spec: RtpLegSpec) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType=f"audio/{spec.codec}", clockRate=spec.clock_rate,
                                 channels=spec.channels, payloadType=spec.payload_type)


def _encoder(spec: RtpLegSpec):
    if spec.codec == "G722":
        return G722Encoder()
    return G711Encoder(spec.codec) if spec.codec in ("PCMU", "PCMA") else get_encoder(_codec(spec))


def _decoder(spec: RtpLegSpec):
    return G722Decoder() if spec.codec == "G722" else get_decoder(_codec(spec))


def _quiet(frame: av.AudioFrame) -> bool:
    """A pause in the caller's speech, where a frame may be dropped unheard."""
    return quiet(frame.to_ndarray().astype(np.float32) / 32768)


class CallerTrack(MediaStreamTrack):
    """The caller's audio: the decoded 20 ms frame of each tick of a playout clock.

    Playout starts once the leg's `jitter_packets` have arrived; the track ends when no packet came
    for the leg's timeout while the caller should be sending. A frame's `pts` counts the ticks at
    which the jitter buffer moved on, so a lost (or undecodable) packet leaves a break in them for
    the bridge to conceal, and a sender that pauses leaves none.
    """

    kind = "audio"

    def __init__(self, session: RtpSession):
        """`session` is held weakly: it owns the track, and a cycle between them would outlive the
        call until a full garbage collection (with the decoder and resamplers in it)."""
        super().__init__()
        self._session = weakref.proxy(session)
        self._arrived = asyncio.Event()
        self._start: float | None = None
        self._ticks = 0  # playout ticks since the start
        self._played = 0  # of those, ticks at which the jitter buffer moved on (a packet, or a lost one)
        self._format: tuple[str, int] | None = None  # (layout, rate) of the first decoded frame
        self._conform: av.AudioResampler | None = None

    def packet_arrived(self) -> None:
        self._arrived.set()

    async def recv(self) -> av.AudioFrame:
        while True:
            frame = await self._next_tick()
            if frame is not None:
                return frame

    async def _next_tick(self) -> av.AudioFrame | None:
        """Wait for the next playout tick; its frame, or None if it has none to play."""
        if self.readyState != "live":
            raise MediaStreamError
        session = self._session
        loop = asyncio.get_running_loop()
        if self._start is None:
            while session.jitter.depth < session.spec.jitter_packets:
                self._arrived.clear()
                await self._wait_for_packet()
            self._start = loop.time() + PLAYOUT_MARGIN
        await asyncio.sleep(max(0.0, self._start + self._ticks * PACKET_SECONDS - loop.time()))
        if session.spec.receives and loop.time() - session.last_arrival > session.spec.rtp_timeout:
            self.stop()
            raise MediaStreamError
        due = self._start + self._ticks * PACKET_SECONDS
        self._ticks += 1
        if session.jitter.depth == 0:
            return None  # nothing has arrived to play: the sender paused (or is on hold)
        if session.jitter.hold():
            return None  # the network jitters more: the playout a packet deeper
        tick, self._played = self._played, self._played + 1
        frame = self._frame(session.jitter.pop(due))
        if frame is not None and _quiet(frame) and session.jitter.drop_quiet():
            frame = self._frame(session.jitter.pop(due))  # calm again: a pause a packet shorter
        if frame is None:
            return None  # lost: a break in the timestamps
        frame = self._conformed(frame)
        frame.pts = tick * round(frame.sample_rate * PACKET_SECONDS)
        frame.time_base = fractions.Fraction(1, frame.sample_rate)
        return frame

    async def _wait_for_packet(self) -> None:
        session = self._session
        while True:
            timeout = session.spec.rtp_timeout - (asyncio.get_running_loop().time() - session.last_arrival)
            if not session.spec.receives:
                timeout = session.spec.rtp_timeout  # on hold: nothing is due, keep waiting
            try:
                await asyncio.wait_for(self._arrived.wait(), max(timeout, 0.0))
                return
            except TimeoutError:
                if session.spec.receives:
                    self.stop()
                    raise MediaStreamError from None

    def _frame(self, payload: bytes | None) -> av.AudioFrame | None:
        """The payload decoded; silence for a telephone event's time (b""); None if lost or undecodable."""
        if payload == b"":
            rate = self._format[1] if self._format else self._session.spec.sample_rate
            layout = self._format[0] if self._format else "mono"
            samples = np.zeros((1, round(rate * PACKET_SECONDS) * (2 if layout == "stereo" else 1)), np.int16)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=layout)
            frame.sample_rate = rate
            return frame
        frames = self._session.decode(payload) if payload else []
        if not frames:
            self._session.stats.lost += 1
            return None
        return frames[0]

    def _conformed(self, frame: av.AudioFrame) -> av.AudioFrame:
        """Frames in the layout and rate of the first one: a re-INVITE may change the codec."""
        shape = (frame.layout.name, frame.sample_rate)
        if self._format is None:
            self._format = shape
        if shape != self._format:
            if self._conform is None:
                self._conform = av.AudioResampler(format="s16", layout=self._format[0], rate=self._format[1])
            frame.pts = None
            out = self._conform.resample(frame)
            data = np.concatenate([f.to_ndarray() for f in out], axis=1) if out else np.zeros((1, 0), np.int16)
            frame = av.AudioFrame.from_ndarray(data, format="s16", layout=self._format[0])
            frame.sample_rate = self._format[1]
        return frame


class RtpSession:
    def __init__(self, spec: RtpLegSpec, on_dtmf: DtmfCallback | None = None):
        self.spec = spec
        self.on_dtmf = on_dtmf
        self.stats = RtpStats()
        self.jitter = JitterBuffer(max(8, spec.jitter_max_packets + 2), PlayoutDepth(spec.jitter_packets, spec.jitter_max_packets,
                                                        margin=PLAYOUT_MARGIN))
        self.caller_track = CallerTrack(self)
        self.bridge = TrackBridge(self.caller_track)  # conceals the lost packets and counts them
        self.local: tuple[str, int] | None = None
        self.last_arrival = 0.0  # loop time of the last caller packet (or of the start)
        self._rtp: _Endpoint | None = None
        self._rtcp: _Endpoint | None = None
        self._remote = (spec.remote_host, spec.remote_port)
        self._remote_rtcp = (spec.remote_host, spec.remote_rtcp_port)
        self._latched: tuple[str, int] | None = None
        self._latched_rtcp = False
        self._dtmf = DtmfDetector()
        self._decoder = _decoder(spec)
        self._encoder = _encoder(spec)
        self._srtp = SrtpContext(spec.srtp) if spec.srtp else None
        self._ssrc = random.getrandbits(32)
        self._sequence = random.getrandbits(16)
        self._timestamp = random.getrandbits(32)
        self._marker = True
        self._remote_ssrc: int | None = None
        self._highest_seq: int | None = None
        self._base_seq: int | None = None
        self._transit: float | None = None
        self._jitter = 0.0  # RFC 3550 interarrival jitter, in timestamp units
        self._last_sr: tuple[int, float] | None = None  # (middle 32 bits of its NTP time, when it came)

    # -- sockets --------------------------------------------------------------------------------

    async def bind(self, host: str, port: int) -> None:
        """RTP on `port`, RTCP on `port + 1`; raises OSError if either is taken."""
        loop = asyncio.get_running_loop()
        self.last_arrival = loop.time()
        rtp_transport, self._rtp = await loop.create_datagram_endpoint(
            lambda: _Endpoint(self._on_rtp), local_addr=(host, port))
        try:
            _, self._rtcp = await loop.create_datagram_endpoint(
                lambda: _Endpoint(self._on_rtcp), local_addr=(host, port + 1))
        except OSError:
            rtp_transport.close()
            raise
        self.local = (host, port)

    def close(self) -> None:
        """Close the sockets and let go of what refers back to this session (the endpoints call its
        methods, the owner's digit callback may hold it), so that an ended leg, with its codecs and
        resamplers, is freed by reference counting, not by the next full garbage collection."""
        for endpoint in (self._rtp, self._rtcp):
            if endpoint is not None and endpoint.transport is not None:
                endpoint.transport.close()
        self._rtp = self._rtcp = None
        self.caller_track.stop()
        self.on_dtmf = None

    def update(self, spec: RtpLegSpec) -> None:
        """A re-INVITE: hold or resume, another codec, another address."""
        if spec.codec != self.spec.codec or spec.payload_type != self.spec.payload_type:
            self._decoder, self._encoder = _decoder(spec), _encoder(spec)
        if spec.srtp != self.spec.srtp:
            self._srtp = SrtpContext(spec.srtp) if spec.srtp else None
        if (spec.remote_host, spec.remote_port) != (self.spec.remote_host, self.spec.remote_port):
            self._remote, self._remote_rtcp = (spec.remote_host, spec.remote_port), (spec.remote_host,
                                                                                     spec.remote_rtcp_port)
            self._latched = None
        if spec.receives and not self.spec.receives:
            self.last_arrival = asyncio.get_running_loop().time()  # resumed: the timeout starts again
        self.spec = spec

    # -- the media link -------------------------------------------------------------------------

    async def run(self, slot: CallSlot) -> None:
        """A `MediaLink`: caller audio into `slot` and the agent's out, until the caller's media ends."""
        agent = AgentTrack(slot, sample_format="s16")
        sender = asyncio.get_running_loop().create_task(self._send_forever(agent), name="rtp-send")
        reports = asyncio.get_running_loop().create_task(self._report_forever(), name="rtcp-report")
        try:
            await self.bridge.run(slot)
        finally:
            for task in (sender, reports):
                task.cancel()
            await asyncio.wait([sender, reports])
            self.close()

    async def _send_forever(self, agent: AgentTrack) -> None:
        try:
            while True:
                payloads, _ = self._encoder.encode(await agent.recv())
                for payload in payloads:
                    self._send_packet(payload)
        finally:
            agent.stop()

    def _send_packet(self, payload: bytes) -> None:
        step = int(self.spec.clock_rate * PACKET_SECONDS)
        if self.spec.sends and self._rtp is not None and self._rtp.transport is not None:
            destination = self._latched or self._remote
            if destination[1] and destination[0] not in ("0.0.0.0", "::"):
                packet = RtpPacket(payload_type=self.spec.payload_type, marker=int(self._marker),
                                   sequence_number=self._sequence, timestamp=self._timestamp, ssrc=self._ssrc,
                                   payload=payload)
                data = packet.serialize()
                self._rtp.transport.sendto(self._srtp.protect(data) if self._srtp else data, destination)
                self._marker = False
                self.stats.packets_sent += 1
                self.stats.octets_sent += len(payload)
                self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + step) & 0xFFFFFFFF

    # -- receiving ------------------------------------------------------------------------------

    def decode(self, payload: bytes) -> list[av.AudioFrame]:
        try:
            return self._decoder.decode(JitterFrame(payload, 0))
        except (av.FFmpegError, ValueError) as error:
            log.debug("undecodable RTP payload", extra={"error": repr(error)})
            return []

    def _on_rtp(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            if is_rtcp(data):  # RTCP multiplexed on the RTP port (RFC 5761)
                return self._on_rtcp(data, source)
            packet = RtpPacket.parse(self._srtp.unprotect(data) if self._srtp else data)
        except (SrtpError, ValueError, IndexError, KeyError) as error:
            self.stats.rejected += 1
            log.debug("not an RTP packet", extra={"error": repr(error)})
            return
        if packet.payload_type not in (self.spec.payload_type, self.spec.dtmf_payload_type):
            self.stats.rejected += 1
            return
        now = asyncio.get_running_loop().time()
        if source != self._latched and (self._latched is None or now - self.last_arrival > RELATCH_SECONDS):
            self._latched = source
            if not self._latched_rtcp and source != self._remote:  # behind a NAT: RTCP is likely next to RTP
                self._remote_rtcp = (source[0], source[1] + 1)
        if source != self._latched:
            self.stats.rejected += 1
            return
        self.last_arrival = now
        self.stats.packets_received += 1
        self.stats.octets_received += len(packet.payload)
        self._count_received(packet, now)
        if packet.payload_type == self.spec.dtmf_payload_type:
            self._on_event(packet)
            self.jitter.put(packet.sequence_number, b"")  # the digit's time is silence in the audio
        else:
            self.jitter.put(packet.sequence_number, packet.payload, now, packet.timestamp / self.spec.clock_rate)
        self.caller_track.packet_arrived()

    def _on_event(self, packet: RtpPacket) -> None:
        try:
            event = DtmfEvent.parse(packet.payload)
        except ValueError:
            return
        digit = self._dtmf.feed(packet.timestamp, event)
        if digit is not None and self.on_dtmf is not None:
            self.on_dtmf(digit)

    def _count_received(self, packet: RtpPacket, now: float) -> None:
        if packet.ssrc != self._remote_ssrc:
            self._remote_ssrc, self._base_seq, self._highest_seq, self._transit = packet.ssrc, None, None, None
        seq = packet.sequence_number
        if self._highest_seq is None:
            self._base_seq = self._highest_seq = seq
        else:
            delta = (seq - (self._highest_seq & 0xFFFF)) & 0xFFFF
            if 0 < delta < 0x8000:
                self._highest_seq += delta
        if packet.payload_type == self.spec.payload_type:
            transit = now * self.spec.clock_rate - packet.timestamp
            if self._transit is not None:
                self._jitter += (abs(transit - self._transit) - self._jitter) / 16
            self._transit = transit

    def _on_rtcp(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            packets = RtcpPacket.parse(self._srtp.unprotect_rtcp(data) if self._srtp else data)
        except (SrtpError, ValueError, IndexError) as error:
            self.stats.rejected += 1
            log.debug("not an RTCP packet", extra={"error": repr(error)})
            return
        self.stats.rtcp_received += 1
        if self._latched is not None and source[0] == self._latched[0]:
            self._remote_rtcp, self._latched_rtcp = source, True
        for packet in packets:
            if isinstance(packet, RtcpSrPacket):
                self._last_sr = ((packet.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF, time.monotonic())

    # -- RTCP reports ---------------------------------------------------------------------------

    async def _report_forever(self) -> None:
        while True:
            await asyncio.sleep(RTCP_INTERVAL * random.uniform(0.5, 1.5))  # RFC 3550 §6.3.1
            self.send_report()

    def send_report(self) -> None:
        if self._rtcp is None or self._rtcp.transport is None or not self._remote_rtcp[1]:
            return
        if self._remote_rtcp[0] in ("0.0.0.0", "::"):
            return
        reports = [self._reception_report()] if self._remote_ssrc is not None else []
        if self.stats.packets_sent:
            info = RtcpSenderInfo(ntp_timestamp=current_ntp_time(), rtp_timestamp=self._timestamp,
                                  packet_count=self.stats.packets_sent & 0xFFFFFFFF,
                                  octet_count=self.stats.octets_sent & 0xFFFFFFFF)
            packet = bytes(RtcpSrPacket(ssrc=self._ssrc, sender_info=info, reports=reports))
        else:
            packet = bytes(RtcpRrPacket(ssrc=self._ssrc, reports=reports))
        self._rtcp.transport.sendto(self._srtp.protect_rtcp(packet) if self._srtp else packet, self._remote_rtcp)
        self.stats.rtcp_sent += 1

    def _reception_report(self) -> RtcpReceiverInfo:
        expected = (self._highest_seq - self._base_seq + 1) if self._highest_seq is not None else 0
        lost = max(0, expected - self.stats.packets_received)
        lsr, dlsr = 0, 0
        if self._last_sr is not None:
            lsr = self._last_sr[0]
            dlsr = int((time.monotonic() - self._last_sr[1]) * 65536)
        return RtcpReceiverInfo(ssrc=self._remote_ssrc, fraction_lost=min(255, lost * 256 // max(expected, 1)),
                                packets_lost=lost, highest_sequence=(self._highest_seq or 0) & 0xFFFFFFFF,
                                jitter=int(self._jitter), lsr=lsr, dlsr=dlsr)
