import asyncio
import fractions

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agent.bridge import PACKET_SAMPLES, AgentTrack, TrackBridge
from agent.engine.backend import SAMPLE_RATE, CallSetup
from agent.engine.clock import EngineClock
from agent.engine.echo import EchoBackend


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
