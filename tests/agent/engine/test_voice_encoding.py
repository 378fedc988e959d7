"""A voice recording made into its stored voice by the engine, in chunks between steps (tiny reference, CPU)."""

import asyncio

import pytest
import torch

from agent.engine.clock import EngineClock
from agent.engine.engine import ModelBackend
from agent.engine.pacer import PrefillPacer
from agent.engine.voice import VoiceEncoding
from agent.model.stream import StreamingLM
from bench.voice_stall import side_thread_voice

pytestmark = [pytest.mark.reference, pytest.mark.anyio]


@pytest.fixture(scope="module")
def pcm(golden) -> torch.Tensor:
    """The reference's voice recording [1, 1, F * 1920], its last frame padded with silence."""
    audio = golden["voice_audio"]  # [1, samples]
    frames = -(-audio.shape[1] // 1920)
    return torch.nn.functional.pad(audio, (0, frames * 1920 - audio.shape[1]))[None]


def assert_todays(prompt, mimi, lm, pcm) -> None:
    """The stored voice is the one made before the engine made it (on a side thread, a full-context prefill)."""
    embeddings, cache = side_thread_voice(mimi, lm, pcm)
    assert torch.equal(prompt.embeddings, embeddings) and torch.equal(prompt.cache, cache)


@pytest.mark.parametrize("chunk", [1, 5, 100])
def test_a_voice_encoded_in_chunks_is_the_stored_voice_made_in_one_go(models, pcm, chunk):
    mimi, lm = models
    encoding = VoiceEncoding(mimi, StreamingLM(lm), pcm, "reference")
    chunks = 0
    while not encoding.done:
        encoding.advance(chunk)
        chunks += 1
    assert chunks == -(-encoding.frames // chunk)
    assert_todays(encoding.prompt, mimi, lm, pcm)


@pytest.mark.parametrize("with_a_call", [True, False])
async def test_the_engine_makes_a_voice_a_frame_a_step_beside_a_running_call(models, pcm, reference_call,
                                                                            with_a_call):
    """Paced to one frame a step, the voice takes a step per frame, the running call steps every one of
    them, and the stored voice is the same; with no call running the clock still ticks for it."""
    mimi, lm = models
    backend = ModelBackend(mimi, lm, num_slots=2)
    backend.voice_pacer = PrefillPacer(backend.device, seconds_per_frame=1.0, min_frames=1)  # no frame fits: 1 a step
    clock = EngineClock(backend)
    clock.start()
    try:
        slot = await clock.join(reference_call) if with_a_call else None
        steps, frames = clock.stats.steps, slot.stats.frames if slot else 0
        encoding = VoiceEncoding(mimi, StreamingLM(lm), pcm, "reference")
        prompt = await asyncio.to_thread(clock.make_voice, encoding)
        assert clock.stats.steps - steps >= encoding.frames - 1  # the last step is counted after the voice is made
        if slot is not None:
            assert slot.stats.frames - frames >= encoding.frames
        assert_todays(prompt, mimi, lm, pcm)
        while clock.stats.voices == 0:  # counted by the tick that made it, once its step is back
            await asyncio.sleep(0.01)
        assert clock.stats.voices == 1
    finally:
        await clock.stop()


async def test_a_voice_the_engine_cannot_make_fails_and_the_call_goes_on(models, pcm, reference_call):
    mimi, lm = models
    backend = ModelBackend(mimi, lm, num_slots=1)
    clock = EngineClock(backend)
    clock.start()
    try:
        slot = await clock.join(reference_call)
        other_model = StreamingLM(lm)
        other_model.lm = None  # its LM part raises, after the encode
        with pytest.raises(AttributeError):
            await asyncio.to_thread(clock.make_voice, VoiceEncoding(mimi, other_model, pcm, "broken"))
        frames = slot.stats.frames
        prompt = await asyncio.to_thread(clock.make_voice, VoiceEncoding(mimi, StreamingLM(lm), pcm, "reference"))
        assert slot.stats.frames > frames
        assert_todays(prompt, mimi, lm, pcm)
        while clock.stats.voices == 0:
            await asyncio.sleep(0.01)
        assert clock.stats.voices == 1  # the voice that failed is not counted
    finally:
        await clock.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        await asyncio.to_thread(clock.make_voice, VoiceEncoding(mimi, StreamingLM(lm), pcm, "late"))


async def test_a_voice_still_being_made_when_the_engine_stops_fails_rather_than_waiting_for_good(models, pcm):
    mimi, lm = models
    backend = ModelBackend(mimi, lm, num_slots=1)
    backend.voice_pacer = PrefillPacer(backend.device, seconds_per_frame=1.0, min_frames=1)  # one frame a step
    clock = EngineClock(backend)
    clock.start()
    making = asyncio.ensure_future(asyncio.to_thread(clock.make_voice, VoiceEncoding(mimi, StreamingLM(lm), pcm, "")))
    while clock.stats.steps < 2:
        await asyncio.sleep(0.01)
    await clock.stop()
    with pytest.raises(RuntimeError, match="the engine stopped before the voice was made"):
        await making
