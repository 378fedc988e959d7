"""A WebRTC call leg on the worker: aiortc answers the caller's offer, and the call's media flows here.

The caller's Opus track (aiortc decodes it to 48 kHz stereo frames) goes through
`agent.media.bridge.TrackBridge` into the call's engine slot; `agent.media.bridge.AgentTrack` is the answer's
audio track, resampled to 48 kHz in whole 20 ms frames, which aiortc's Opus encoder sends as they
come and stamps (RTP) from their sample counts.
A data channel opened by the caller carries the agent's text and the call's events
(`agent.media.call_channel`). No trickle ICE and no STUN or TURN: the answer holds every host
candidate of the worker (aiortc gathers them before it answers).

Jitter: this leg relies on aiortc's receiver and its jitter buffer, which puts packets back in
order. aiortc builds it for audio to hand a frame on once four more have come (80 ms on a steady
stream) and to wait up to 16 packets for a missing one; after a loss it stays that deep for the
rest of the call. This leg sets it (`hold_back_one_packet`) to hand each frame on when the next
has come (20 ms) and to give a missing packet up after four, so its delay is 20 ms and at worst 80
ms after losses. A packet given up leaves a break in the frame timestamps, which the bridge fills
with silence and counts. Late or bunched arrivals are absorbed by the slot, which holds up to three
frames of caller audio; ticks when it has less than a frame are fed silence and counted.

The call ends (`Session.request_end`, whose first reason is the one recorded) when the caller
hangs up (its DTLS close, or the end of its track), when ICE or DTLS fails (aioice also fails a
connection whose consent checks go unanswered for about 30 s), when media does not connect in
time, or when the worker ends it (the control plane's DELETE, the line's maximum duration); then
the data channel is told why and the peer connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamTrack

from agent.contracts.settings import IceServer
from agent.engine.clock import CallSlot
from agent.media.bridge import AgentTrack, TrackBridge
from agent.media.call_channel import CallChannel
from agent.session import Session
from agent.transcript import PieceText

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 20.0  # seconds from the answer to connected media, or the call ends
SETTLE_TIMEOUT = 1.0  # seconds the connection gets to say why the caller's track ended
HUNG_UP = "the caller hung up"
CONNECTION_FAILED = "the connection failed (ICE or DTLS)"
GOODBYE_TIMEOUT = 2.0  # seconds the caller gets to receive the last data channel messages before the connection closes
MAX_OFFER_BYTES = 64 * 1024
JITTER_CAPACITY = 4  # packets: a missing one is given up when this many have come after it


class OfferError(ValueError):
    """The caller's offer cannot be answered (not SDP, no audio, no codec in common)."""


@dataclass(frozen=True)
class MediaCounts:
    """The gaps of one call, each filled with silence; told to the caller and logged when it ends."""

    caller_gaps: int  # breaks in the caller's RTP timestamps (packets lost or given up)
    caller_concealed_seconds: float  # silence put in for them
    engine_frames: int  # 80 ms engine steps the call took
    engine_concealed: int  # steps with less than a frame of caller audio (fed silence)
    engine_dropped: int  # caller frames dropped because more than three were waiting
    engine_trimmed: int  # caller samples (24 kHz) cut because more than a packet kept waiting
    agent_packets: int  # 20 ms packets sent to the caller
    agent_underruns: int  # of those, silence because no agent audio was ready
    agent_dropped: int  # agent frames dropped because the sender fell behind
    agent_skipped: int  # quiet agent frames skipped to catch up when the sender was behind


def hold_back_one_packet(receiver: RTCRtpReceiver) -> None:
    """Give the receiver a jitter buffer that hands each frame on when the next packet has come.

    aiortc has no setting for it: its buffer is a private attribute, replaced here before the first
    packet. Should a later aiortc rename it, its own buffer stays (80 ms more delay) and a warning says so.
    """
    name = "_RTCRtpReceiver__jitter_buffer"
    if isinstance(getattr(receiver, name, None), JitterBuffer):
        setattr(receiver, name, JitterBuffer(capacity=JITTER_CAPACITY, prefetch=0))
    else:
        log.warning("aiortc's receiver has no jitter buffer where expected: its default (80 ms) stays")


class WebRtcCall:
    """A `MediaLink` (see agent.session) for one call: answer the offer, then `Session.attach` it."""

    def __init__(self, session: Session, tokenizer: PieceText | None, ice_servers: Sequence[IceServer] = ()):
        """`ice_servers`: STUN (a public address as a candidate) and TURN (a relay) for callers behind NATs."""
        self.session = session
        self.channel = CallChannel(session.call, tokenizer)
        session.caller_word_listeners.append(self.channel.heard)
        self.agent = AgentTrack(session.slot, on_text=self.channel.spoke, sample_format="s16", rate=48_000)
        self.bridge: TrackBridge | None = None
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in ice_servers]))
        self._caller: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self._connected = asyncio.Event()
        self._settled = asyncio.Event()  # the connection closed or failed
        self._ice: RTCIceTransport | None = None
        self._closing = False

    async def answer(self, offer: str) -> str:
        """The SDP answer to the caller's offer; raises OfferError (the connection is then closed)."""
        self._pc.on("track", self._on_track)
        self._pc.on("datachannel", self.channel.attach)
        self._pc.on("connectionstatechange", self._on_state)
        try:
            if len(offer.encode()) > MAX_OFFER_BYTES:
                raise OfferError(f"the offer is larger than {MAX_OFFER_BYTES} bytes")
            if not offer.lstrip().startswith("v=0"):
                raise OfferError("the offer is not SDP (it must start with v=0)")
            try:
                await self._pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            except Exception as error:  # aiortc's parser and negotiation raise many kinds on bad SDP
                raise OfferError(f"the offer cannot be used: {error or type(error).__name__}") from error
            audio = [t for t in self._pc.getTransceivers() if t.kind == "audio"]
            if not audio or not self._caller.done():
                raise OfferError("the offer has no audio the caller sends")
            hold_back_one_packet(audio[0].receiver)
            ice = audio[0].receiver.transport.transport  # bundled: the one ICE transport of the call
            ice.on("statechange", lambda: ice.state == "failed" and self._failed())
            self._ice = ice
            self._pc.addTrack(self.agent)
            await self._pc.setLocalDescription(await self._pc.createAnswer())
        except BaseException:
            await self.close()
            raise
        return self._pc.localDescription.sdp

    async def run(self, slot: CallSlot) -> None:
        try:
            try:
                await asyncio.wait_for(self._connected.wait(), CONNECT_TIMEOUT)
            except TimeoutError:
                self.session.request_end(f"media did not connect within {CONNECT_TIMEOUT:.0f} s", "failed")
                return
            self.bridge = TrackBridge(self._caller.result())
            await self.bridge.run(slot)
            # The track ends for a hang-up (RTCP BYE, DTLS close) and for a failure alike: the
            # connection's own state, which comes a moment later, tells them apart.
            try:
                await asyncio.wait_for(self._settled.wait(), SETTLE_TIMEOUT)
            except TimeoutError:
                pass
            self.session.request_end(HUNG_UP)
        finally:
            await self._finish()

    def counts(self) -> MediaCounts:
        stats, bridge = self.session.slot.stats, self.bridge
        gaps, concealed = (bridge.gaps, float(bridge.concealed)) if bridge is not None else (0, 0.0)
        return MediaCounts(gaps, round(concealed, 3), stats.frames, stats.concealed, stats.dropped, stats.trimmed,
                           self.agent.packets, self.agent.underruns, self.agent.dropped, self.agent.skipped)

    async def close(self) -> None:
        self._closing = True
        self.agent.stop()
        await self._pc.close()

    async def _finish(self) -> None:
        """Tell the caller why the call ends, then close (also when cancelled: the worker ends the call)."""
        counts = self.counts()
        reason = self.session.end_reason or "the call ended"
        log.info("webrtc leg closed", extra={"call": self.session.id, "reason": reason, **asdict(counts)})
        if self._pc.connectionState == "connected":  # else there is no one left to tell
            self.channel.ended(reason, self.session.end_outcome, asdict(counts))
            await self.channel.close(GOODBYE_TIMEOUT)
        await self.close()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and not self._caller.done():
            self._caller.set_result(track)

    def _on_state(self) -> None:
        state = self._pc.connectionState
        if state == "connected":
            self._connected.set()
            self.channel.connected()
        elif state == "failed":
            self._failed()
        elif state == "closed" and not self._closing:
            # aiortc closes itself once DTLS is down, which a failed ICE also brings about: then the
            # connection says "closed" before the ICE transport has told its own state.
            if self._ice is not None and self._ice.state == "failed":
                return self._failed()
            self.session.request_end(HUNG_UP)
            self._settled.set()

    def _failed(self) -> None:
        self.session.request_end(CONNECTION_FAILED, "failed")
        self._settled.set()
