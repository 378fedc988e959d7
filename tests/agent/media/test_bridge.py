import asyncio
import fractions

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.contracts.audio import SAMPLE_RATE
from agent.engine.backend import CallSetup
from agent.engine.clock import EngineClock
from agent.engine.echo import EchoBackend
from agent.media.bridge import PACKET_SAMPLES, AgentTrack, Pacer, TrackBridge


class ToneTrack(MediaStreamTrack):
    """A caller: 20 ms frames of a tone, 48 kHz stereo s16 as an Opus decoder gives them, paced in real time."""

    kind = "audio"

    def __init__(self, hz: float, seconds: float, rate: int = 48_000):
        super().__init__()
        self.hz, self.rate, self.frames = hz, rate, int(seconds * 50)
        self.sent = 0

    async def recv(self) -> av.AudioFrame:
        if self.sent == self.frames:
            self.stop()
            raise MediaStreamError
        await asyncio.sleep(0.02)
        n = self.rate // 50
        t = (np.arange(n) + self.sent * n) / self.rate
        tone = (0.3 * 32767 * np.sin(2 * np.pi * self.hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]).T.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self.sent * n, fractions.Fraction(1, self.rate)
        self.sent += 1
        return frame


def dominant_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    return float(np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def test_a_callers_tone_comes_back_through_the_echo_engine_as_paced_24k_frames():
    async def call():
        clock = EngineClock(EchoBackend(2))
        clock.start()
        try:
            slot = await clock.join(CallSetup())
            caller = ToneTrack(hz=440, seconds=1.2)
            bridge_task = asyncio.create_task(TrackBridge(caller).run(slot))
            agent = AgentTrack(slot)
            loop = asyncio.get_running_loop()
            frames, times = [], []
            for _ in range(60):
                frames.append(await agent.recv())
                times.append(loop.time())
            await asyncio.wait_for(bridge_task, 2)  # the caller's track ended: the bridge returns
            return frames, times, agent
        finally:
            await clock.stop()

    frames, times, agent = asyncio.run(call())
    assert all(f.sample_rate == SAMPLE_RATE and f.samples == PACKET_SAMPLES for f in frames)
    assert [f.pts for f in frames] == [i * PACKET_SAMPLES for i in range(60)]
    assert abs((times[-1] - times[0]) / 59 - 0.02) < 0.002  # paced at 20 ms
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    first = int(np.argmax(np.abs(pcm) > 0.01))
    heard = pcm[first:first + SAMPLE_RATE // 2]
    assert first < 0.35 * SAMPLE_RATE and np.abs(heard).min() < 0.3 < np.abs(heard).max()
    assert abs(dominant_hz(heard) - 440) < 3
    assert 0 < agent.underruns < 20  # silence only before the echo arrived


def test_agent_text_tokens_reach_the_callback_in_frame_order():
    from agent.engine.clock import AgentFrame, CallSlot

    async def run():
        slot = CallSlot(index=0)
        for token in (5, -1, 7):
            slot.output.put_nowait(AgentFrame(np.zeros(1920, np.float32), token))
        seen = []
        track = AgentTrack(slot, on_text=lambda frame, token: seen.append((frame, token)))
        for _ in range(12):
            await track.recv()
        return seen

    assert asyncio.run(run()) == [(0, 5), (2, 7)]


def encode_agent_frames(**track_options) -> tuple[list[av.AudioFrame], list[int | None]]:
    """500 frames of an AgentTrack (fed a steady tone), and the RTP timestamps aiortc's Opus encoder gives them."""
    from aiortc.codecs.opus import OpusEncoder

    from agent.engine.clock import AgentFrame, CallSlot

    async def run():
        slot = CallSlot(index=0)
        track = AgentTrack(slot, **track_options)
        encoder = OpusEncoder()
        frames, stamps = [], []
        for i in range(500):
            if i % 4 == 0:
                t = (np.arange(1920) + i * 480) / SAMPLE_RATE
                slot.output.put_nowait(AgentFrame((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), -1))
            frames.append(await track.recv())
            stamps.append(encoder.encode(frames[-1])[1])
        return frames, stamps

    with patch_sleep():
        return asyncio.run(run())


def test_agent_frames_at_24k_encode_to_opus_with_rtp_timestamps_20_ms_apart():
    frames, stamps = encode_agent_frames(sample_format="s16")  # the only format aiortc's encoders take
    sent = [t for t in stamps if t is not None]  # the encoder's own resampler holds back the first packet
    assert len(sent) >= 498 and sent == [960 * i for i in range(len(sent))]  # 48 kHz RTP clock: 20 ms a packet


def test_agent_frames_at_48k_are_whole_opus_frames_that_the_encoder_sends_at_once():
    frames, stamps = encode_agent_frames(sample_format="s16", rate=48_000)
    assert all(f.samples == 960 and f.sample_rate == 48_000 for f in frames)
    assert [f.pts for f in frames] == [960 * i for i in range(500)]
    assert stamps == [960 * i for i in range(500)]  # no packet held back: none is None
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames[8:]]) / 32768
    assert abs(np.fft.rfftfreq(pcm.size, 1 / 48_000)[np.argmax(np.abs(np.fft.rfft(pcm)))] - 440) < 2


def test_frames_stay_due_on_the_first_frames_schedule_over_a_30_minute_call():
    """A fake clock whose every wake-up is up to 4 ms late: lateness never accumulates."""
    rng = np.random.default_rng(1)
    now = [1000.0]
    pacer = Pacer(SAMPLE_RATE, clock=lambda: now[0])
    sent = []
    for n in range(30 * 60 * 50):
        now[0] += pacer.delay(n * PACKET_SAMPLES) + rng.uniform(0, 0.004)
        sent.append(now[0])
    lateness = np.asarray(sent) - (1000.0 + np.arange(len(sent)) * 0.02)  # due: the first call's time + n * 20 ms
    assert len(sent) == 90_000 and (89_999 * PACKET_SAMPLES) / SAMPLE_RATE == 1799.98
    assert lateness.min() >= -1e-6 and lateness.max() < 0.004 + 1e-6


class GappyTrack(MediaStreamTrack):
    """48 kHz frames of a constant level, with the frames in `missing` never delivered (lost packets)."""

    kind = "audio"

    def __init__(self, frames: int, missing: set[int]):
        super().__init__()
        self.order = [i for i in range(frames) if i not in missing]

    async def recv(self) -> av.AudioFrame:
        if not self.order:
            raise MediaStreamError
        i = self.order.pop(0)
        pcm = np.full((1, 960), 8000, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48_000, i * 960, fractions.Fraction(1, 48_000)
        return frame


def test_a_break_in_the_callers_timestamps_is_concealed_by_a_fading_repeat_and_counted():
    from agent.engine.clock import CallSlot

    slot = CallSlot(index=0)
    slot.push = lambda pcm: pushed.append(np.asarray(pcm))  # record everything the bridge gives the slot
    pushed: list[np.ndarray] = []
    bridge = TrackBridge(GappyTrack(frames=20, missing={5, 6, 12}))

    asyncio.run(bridge.run(slot))

    pcm = np.concatenate(pushed)
    assert (bridge.gaps, bridge.concealed) == (2, fractions.Fraction(3, 50))
    assert abs(pcm.size - 20 * 480) <= 32  # the caller's timing is kept (less the resampler's delay)
    level = 8000 / 32768  # the caller's steady level, as the slot gets it
    fills = [pushed[5], pushed[11]]  # frames 0-4, the break of 5 and 6, frames 7-11, the break of 12
    assert [p.size for p in fills] == [960, 480]
    halves = [float(np.abs(p[:480]).mean()) for p in fills] + [float(np.abs(fills[0][480:]).mean())]
    assert np.allclose(halves, [level / 2, level / 2, level / 4], rtol=0.05), halves  # the last 20 ms, halving


def patch_sleep():
    """asyncio.sleep that returns at once: frames are made as fast as the test asks for them."""
    from contextlib import contextmanager
    from unittest import mock

    real = asyncio.sleep

    @contextmanager
    def patched():
        with mock.patch("agent.media.bridge.asyncio.sleep", lambda seconds: real(0)):
            yield

    return patched()
