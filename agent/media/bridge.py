"""One bridge for every transport: a caller's audio track in, the agent's audio track out.

WebRTC (aiortc), RTP from a SIP trunk and media WebSockets all give the worker an aiortc
`MediaStreamTrack` of `av.AudioFrame`s at whatever rate and layout their codec decodes to. The
bridge resamples the caller's frames to 24 kHz mono and pushes them into the call's engine slot;
`AgentTrack` hands the agent's frames back as 20 ms `av.AudioFrame`s at 24 kHz, mono, paced by
their timestamps: float samples, or s16 for aiortc's encoders (Opus, G.711), which take nothing
else and resample to their codec's rate.

Timestamps are sample counts (integers): a frame's due time is the first frame's time plus
pts / 24000 s, so lateness of one wake-up never carries into the next and a 30-minute call ends
where it should (90 000 frames, pts 43 200 000, due at exactly 1800 s). Caller frames carry the
transport's timestamps; a break in them (packets lost, or dropped by the transport's jitter
buffer) is concealed here, for every transport alike: filled with the last 20 ms heard, repeated
at half the level each time and then silence, so the caller's audio keeps its timing without a
click; each break is counted.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Literal

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.contracts.audio import SAMPLE_RATE
from agent.engine.clock import AgentFrame, CallSlot

PACKET_SAMPLES = SAMPLE_RATE // 50  # 20 ms
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
MAX_QUEUED_FRAMES = 3  # agent frames beyond this (a reader that fell behind) are dropped, oldest first
QUIET_RMS = 10 ** (-50 / 20)  # a frame this quiet is a pause, which may be skipped unheard
MAX_CONCEALED = Fraction(1, 4)  # seconds put in for one break (the slot keeps less anyway)
CONCEALED_REPEATS = 5  # a break repeats the last 20 ms this many times, halving each time, then silence
GAP_TOLERANCE = Fraction(1, 1000)  # timestamps this far apart still count as contiguous

TextCallback = Callable[[int, int], None]  # (frame index since the call started, text token)


def caller_resampler() -> av.AudioResampler:
    return av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)


def to_pcm(frames: list[av.AudioFrame]) -> np.ndarray:
    """Resampled frames as one float32 array (empty if the resampler is still filling)."""
    if not frames:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


def quiet(pcm: np.ndarray) -> bool:
    """Whether audio (float, full scale 1) is a pause: RMS under QUIET_RMS (no samples: yes)."""
    return float(np.sqrt(np.mean(np.square(pcm, dtype=np.float32)))) < QUIET_RMS if pcm.size else True


class Pacer:
    """When each frame of a stream is due: counted from the first frame, never from the last wake-up."""

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.clock = clock
        self._start: float | None = None

    def delay(self, pts: int) -> float:
        """Seconds to wait before sending the frame that starts at sample `pts` (0 for the first)."""
        now = self.clock()
        if self._start is None:
            self._start = now - pts / self.rate
        return max(0.0, self._start + pts / self.rate - now)


class AgentTrack(MediaStreamTrack):
    """The agent's voice as a live audio track: 20 ms frames, timestamps counted in samples.

    The first frame is due when `recv` is first called; each next one 20 ms later. When the engine
    has nothing ready (its frame is late, or the call just started), silence is sent and counted,
    so the far end always hears a steady stream. When the reader is a frame or more behind (frames
    made before the transport started sending, or a step that came late), the agent's pauses are
    skipped (and counted) until it is not: a delay once taken would otherwise stay for the call.

    With `rate` 48 kHz the frames come resampled (PyAV) to exactly 960 samples each, the first
    led by the resampler's delay in silence: aiortc's Opus encoder then has nothing to resample and
    sends each frame at once, where from 24 kHz it would hold every packet back 20 ms to fill one.
    """

    kind = "audio"

    def __init__(self, slot: CallSlot, on_text: TextCallback | None = None,
                 sample_format: Literal["flt", "s16"] = "flt", rate: int = SAMPLE_RATE):
        super().__init__()
        self.slot = slot
        self.sample_format = sample_format
        self.rate = rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate) if rate != SAMPLE_RATE else None
        self._resampled = np.zeros(0, dtype=np.float32)
        self.on_text = on_text
        self.packets = 0  # 20 ms packets handed out
        self.underruns = 0  # of those, silence because no agent audio was ready
        self.dropped = 0  # agent frames dropped because more than MAX_QUEUED_FRAMES waited
        self.skipped = 0  # quiet agent frames skipped because the reader was behind
        self._pending = np.zeros(0, dtype=np.float32)
        self._pts = 0
        self._pacer = Pacer(SAMPLE_RATE)
        self._frames = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await asyncio.sleep(self._pacer.delay(self._pts))
        self._fill()
        if self._pending.size >= PACKET_SAMPLES:
            samples, self._pending = self._pending[:PACKET_SAMPLES], self._pending[PACKET_SAMPLES:]
        else:
            samples = np.zeros(PACKET_SAMPLES, dtype=np.float32)
            self.underruns += 1
        if self._resampler is not None:
            samples = self._to_rate(samples)
        if self.sample_format == "s16":
            samples = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format=self.sample_format, layout="mono")
        frame.sample_rate, frame.time_base = self.rate, fractions.Fraction(1, self.rate)
        frame.pts = self.packets * (self.rate // 50)
        self._pts += PACKET_SAMPLES
        self.packets += 1
        return frame

    def _to_rate(self, samples: np.ndarray) -> np.ndarray:
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, self._pts, TIME_BASE
        self._resampled = np.concatenate([self._resampled, to_pcm(self._resampler.resample(frame))])
        packet = self.rate // 50
        if self._pts == 0:  # the resampler's delay, once, so that every frame is whole
            self._resampled = np.concatenate([np.zeros(max(0, packet - self._resampled.size), np.float32),
                                              self._resampled])
        out, self._resampled = self._resampled[:packet], self._resampled[packet:]
        return np.pad(out, (0, packet - out.size))

    def _fill(self) -> None:
        """Move what the engine produced into the pending samples, keeping latency bounded."""
        queue: asyncio.Queue[AgentFrame] = self.slot.output
        while queue.qsize() > MAX_QUEUED_FRAMES:
            self._take(queue.get_nowait(), keep_audio=False)
            self.dropped += 1
        while self._pending.size < PACKET_SAMPLES and not queue.empty():
            frame = queue.get_nowait()
            behind = not queue.empty()  # the next frame is here already: this one would be heard late
            skip = behind and self._pending.size == 0 and quiet(frame.pcm)
            self._take(frame, keep_audio=not skip)
            self.skipped += skip

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
        self.gaps = 0  # breaks in the caller's timestamps, each concealed
        self.concealed = Fraction(0)  # seconds put in for them
        self._last = np.zeros(PACKET_SAMPLES, dtype=np.float32)  # the latest 20 ms pushed

    async def run(self, slot: CallSlot) -> None:
        resampler = caller_resampler()
        expected: Fraction | None = None  # where the next frame should start, in seconds
        while True:
            try:
                frame = await self.caller.recv()
            except MediaStreamError:
                return
            if frame.pts is not None and frame.time_base is not None:
                start = frame.pts * Fraction(frame.time_base)
                if expected is not None and start - expected > GAP_TOLERANCE:
                    self._conceal(slot, start - expected)
                expected = start + Fraction(frame.samples, frame.sample_rate)
            self._push(slot, to_pcm(resampler.resample(frame)))

    def _push(self, slot: CallSlot, pcm: np.ndarray) -> None:
        slot.push(pcm)
        if pcm.size:
            self._last = np.concatenate([self._last, pcm])[-PACKET_SAMPLES:]

    def _conceal(self, slot: CallSlot, seconds: Fraction) -> None:
        seconds = min(seconds, MAX_CONCEALED)
        samples = round(seconds * SAMPLE_RATE)
        repeats = -(-samples // PACKET_SAMPLES)
        gains = [0.5 ** k if k <= CONCEALED_REPEATS else 0.0 for k in range(1, repeats + 1)]
        fill = np.concatenate([self._last * g for g in gains])[:samples].astype(np.float32)
        self._push(slot, fill)
        self.gaps += 1
        self.concealed += seconds
