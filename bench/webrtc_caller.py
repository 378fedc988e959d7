"""A WebRTC caller on aiortc, for benchmarks and tests: calls a line through its WHIP endpoint,
plays a signal into the call, and records what the line sends back with the time each packet came.

Times are the event loop's clock. A sent 20 ms frame is stamped when aiortc's sender takes it (it
encodes and sends it at once); a received frame is stamped with the arrival of its RTP packet, read
where aiortc hands the packet to its receiver, so the caller's own jitter buffer (which holds
frames back by four packets) does not count in what is measured.
"""

from __future__ import annotations

import asyncio
import fractions
import json
from dataclasses import dataclass, field
from typing import Any

import av
import httpx
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 48_000
PACKET = RATE // 50  # 20 ms
TIME_BASE = fractions.Fraction(1, RATE)


class SignalTrack(MediaStreamTrack):
    """Plays `signal` (float mono at 48 kHz) in paced 20 ms frames, then silence; stamps each frame."""

    kind = "audio"

    def __init__(self, signal: np.ndarray):
        super().__init__()
        self.signal = np.asarray(signal, dtype=np.float32)
        self.sent_at: list[float] = []  # loop time of frame n's first sample
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        n = len(self.sent_at)
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + n * PACKET / RATE - loop.time()))
        chunk = self.signal[n * PACKET:(n + 1) * PACKET]
        chunk = np.pad(chunk, (0, PACKET - chunk.size))
        pcm = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, n * PACKET, TIME_BASE
        self.sent_at.append(loop.time())
        return frame


@dataclass
class Received:
    """What came back: decoded 48 kHz mono frames with their RTP offsets and packet arrival times."""

    frames: list[np.ndarray] = field(default_factory=list)
    pts: list[int] = field(default_factory=list)  # in 48 kHz samples from the first packet
    arrived_at: list[float] = field(default_factory=list)

    def pcm(self) -> np.ndarray:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, np.float32)

    def gaps(self) -> int:
        """Breaks in the RTP timestamps (packets that never came)."""
        return sum(1 for a, b, f in zip(self.pts, self.pts[1:], self.frames) if b - a != f.size)


class WhipCall:
    """One call: `start()` sends the offer and sets the answer; `hang_up()` deletes the session.

    `local_address`: the address its HTTP requests come from (the line records the caller as
    webrtc:ADDRESS, so callers from different addresses can be told apart)."""

    def __init__(self, base_url: str, token: str, tenant: str, line: str, signal: np.ndarray,
                 local_address: str | None = None):
        self.url = f"{base_url.rstrip('/')}/tenants/{tenant}/lines/{line}/whip"
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.source = SignalTrack(signal)
        self.received = Received()
        self.messages: list[dict[str, Any]] = []
        self.session_url: str | None = None
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._arrivals: dict[int, float] = {}  # RTP timestamp -> loop time
        self._first_rtp: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.local_address = local_address

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=30, transport=httpx.AsyncHTTPTransport(local_address=self.local_address))

    async def prepare(self) -> None:
        """Make the offer (its ICE candidates gathered), so that `start` only sends it: callers
        prepared first then arrive together."""
        if self.pc.localDescription is not None:
            return
        self.pc.addTrack(self.source)
        channel = self.pc.createDataChannel("call")
        channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)
        await self.pc.setLocalDescription(await self.pc.createOffer())

    async def start(self) -> httpx.Response:
        """Offer, and on 201 answer; returns the WHIP response (the caller checks its status)."""
        await self.prepare()
        async with self._client() as client:
            response = await client.post(self.url, content=self.pc.localDescription.sdp,
                                         headers=self.headers | {"Content-Type": "application/sdp"})
        if response.status_code == 201:
            self.session_url = self.base_url + response.headers["Location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
            for transceiver in self.pc.getTransceivers():
                if transceiver.kind == "audio":
                    self._stamp_arrivals(transceiver.receiver)
        else:
            await self.close()
        return response

    async def hang_up(self, wait_for_end: float = 5.0) -> httpx.Response:
        """DELETE the session, wait for the line's "ended" message, close."""
        async with self._client() as client:
            response = await client.delete(self.session_url, headers=self.headers)
        try:
            await asyncio.wait_for(self.ended.wait(), wait_for_end)
        except TimeoutError:
            pass
        await self.close()
        return response

    async def close(self) -> None:
        self.source.stop()
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []

    def messages_of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def _on_message(self, data: str) -> None:
        message = json.loads(data)
        self.messages.append(message)
        if message["type"] == "ended":
            self.ended.set()

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()
        elif self.pc.connectionState in ("failed", "closed"):
            self.ended.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.get_running_loop().create_task(self._record(track), name="record"))

    async def _record(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrived = (self._arrivals.pop((self._first_rtp + frame.pts) & 0xFFFFFFFF, None)
                       if self._first_rtp is not None else None)
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in resampler.resample(frame)] or [np.zeros(0)])
            self.received.frames.append(pcm.astype(np.float32))
            self.received.pts.append(frame.pts)
            self.received.arrived_at.append(arrived if arrived is not None else asyncio.get_running_loop().time())

    def _stamp_arrivals(self, receiver: RTCRtpReceiver) -> None:
        """Note when each RTP packet reaches the receiver (before its jitter buffer)."""
        handle = receiver._handle_rtp_packet
        loop = asyncio.get_running_loop()

        async def stamped(packet, arrival_time_ms: int) -> None:
            if self._first_rtp is None:
                self._first_rtp = packet.timestamp
            self._arrivals.setdefault(packet.timestamp, loop.time())
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = stamped
