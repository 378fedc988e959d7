"""One bridge for every transport: a caller's audio track in, the agent's audio track out.

WebRTC (aiortc), RTP from a SIP trunk and media WebSockets all give the worker an aiortc
`MediaStreamTrack` of `av.AudioFrame`s at whatever rate and layout their codec decodes to. The
bridge resamples the caller's frames to 24 kHz mono and pushes them into the call's engine slot;
`AgentTrack` hands the agent's frames back as 20 ms `av.AudioFrame`s at 24 kHz, paced by their
timestamps, for the transport to encode (aiortc's encoders resample to their codec's rate).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.engine.backend import SAMPLE_RATE
from agent.engine.clock import AgentFrame, CallSlot

PACKET_SAMPLES = SAMPLE_RATE // 50  # 20 ms
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
MAX_QUEUED_FRAMES = 3  # agent frames beyond this (a reader that fell behind) are dropped, oldest first

TextCallback = Callable[[int, int], None]  # (frame index since the call started, text token)


def caller_resampler() -> av.AudioResampler:
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)


def to_pcm(frames: list[av.AudioFrame]) -> np.ndarray:
    """Resampled frames as one float32 array (empty if the resampler is still filling)."""
    if not frames:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


class AgentTrack(MediaStreamTrack):
    """The agent's voice as a live audio track: 20 ms frames, timestamps counted in samples.

    The first frame is due when `recv` is first called; each next one 20 ms later. When the engine
    has nothing ready (its frame is late, or the call just started), silence is sent and counted,
    so the far end always hears a steady stream.
    """

    kind = "audio"

    def __init__(self, slot: CallSlot, on_text: TextCallback | None = None):
        super().__init__()
        self.slot = slot
        self.on_text = on_text
        self.underruns = 0  # 20 ms packets of silence sent because no agent audio was ready
        self.dropped = 0
        self._pending = np.zeros(0, dtype=np.float32)
        self._pts = 0
        self._start: float | None = None
        self._frames = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self._start + self._pts / SAMPLE_RATE - time.monotonic()))
        self._fill()
        if self._pending.size >= PACKET_SAMPLES:
            samples, self._pending = self._pending[:PACKET_SAMPLES], self._pending[PACKET_SAMPLES:]
        else:
            samples = np.zeros(PACKET_SAMPLES, dtype=np.float32)
            self.underruns += 1
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, self._pts, TIME_BASE
        self._pts += PACKET_SAMPLES
        return frame

    def _fill(self) -> None:
        """Move what the engine produced into the pending samples, keeping latency bounded."""
        queue: asyncio.Queue[AgentFrame] = self.slot.output
        while queue.qsize() > MAX_QUEUED_FRAMES:
            self._take(queue.get_nowait(), keep_audio=False)
            self.dropped += 1
        while self._pending.size < PACKET_SAMPLES and not queue.empty():
            self._take(queue.get_nowait(), keep_audio=True)

    def _take(self, frame: AgentFrame, keep_audio: bool) -> None:
        if keep_audio:
            self._pending = np.concatenate([self._pending, frame.pcm])
        if self.on_text is not None and frame.text_token >= 0:
            self.on_text(self._frames, frame.text_token)
        self._frames += 1


class TrackBridge:
    """A `MediaLink` (see agent.session): the caller's track into the slot, until the track ends."""

    def __init__(self, caller: MediaStreamTrack):
        self.caller = caller

    async def run(self, slot: CallSlot) -> None:
        resampler = caller_resampler()
        while True:
            try:
                frame = await self.caller.recv()
            except MediaStreamError:
                return
            slot.push(to_pcm(resampler.resample(frame)))
