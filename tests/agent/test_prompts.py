import asyncio
import subprocess

import pytest
import torch

from agent.engine.prefix import PromptTooLong
from agent.model.loading import load_models
from agent.prompts import PromptBuilder
from personas.schema import Persona
from voices.catalog import VoiceError
from voices.prompt import VoicePrompt


@pytest.fixture
def models(release_folder):
    return load_models(f"local:{release_folder}", device="cpu")


def speech(path, text="Hello, this is my voice."):
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True)
    return path


def test_a_released_voice_is_the_stored_voice_file(models, tmp_path):
    builder = PromptBuilder(models, tmp_path / "voices", tmp_path / "cache")
    prompt = builder.prompt(Persona(role="Hi", voice="NATF2"))
    assert isinstance(prompt.voice, VoicePrompt)
    assert prompt.text_tokens == tuple(models.tokenizer.encode_role("Hi"))


def test_a_wav_voice_is_made_into_a_stored_voice_once(models, tmp_path):
    voices = tmp_path / "voices"
    voices.mkdir()
    speech(voices / "maya.wav")
    builder = PromptBuilder(models, voices, tmp_path / "cache")
    first = builder.prompt(Persona(role="Hi", voice="maya.wav")).voice
    made = list((tmp_path / "cache").rglob("*.pt"))
    assert len(made) == 1
    mtime = made[0].stat().st_mtime_ns
    second = builder.prompt(Persona(role="Hi", voice="maya.wav")).voice
    assert made[0].stat().st_mtime_ns == mtime  # read from the cache, not made again
    assert torch.equal(first.cache, second.cache) and first.embeddings.shape[3] == models.lm.config.dim
    seconds = 1.6  # espeak's clip, roughly: one embedding per frame after the first
    assert abs(first.embeddings.shape[0] - seconds * 12.5) < 10


@pytest.mark.anyio
async def test_a_wav_voice_made_by_a_running_engine_is_the_one_made_at_once(models, tmp_path):
    from agent.engine.clock import EngineClock
    from agent.engine.engine import ModelBackend

    voices = tmp_path / "voices"
    voices.mkdir()
    speech(voices / "maya.wav")
    persona = Persona(role="Hi", voice="maya.wav")
    at_once = PromptBuilder(models, voices, tmp_path / "at-once").prompt(persona).voice
    clock = EngineClock(ModelBackend(models.mimi, models.lm, num_slots=1))
    clock.start()
    try:
        builder = PromptBuilder(models, voices, tmp_path / "engine", make_voice=clock.make_voice)
        by_engine = (await asyncio.to_thread(builder.prompt, persona)).voice
        steps = clock.stats.steps
    finally:
        await clock.stop()
    assert steps > 0  # the engine made it, between its steps
    assert torch.equal(by_engine.embeddings, at_once.embeddings) and torch.equal(by_engine.cache, at_once.cache)


@pytest.mark.parametrize("problem, effect", [("silent", ["trim", "0", "2"]), ("short", ["synth", "0.1", "sine", "300"])])
def test_a_wav_that_is_no_voice_is_refused(models, tmp_path, problem, effect):
    voices = tmp_path / "voices"
    voices.mkdir()
    subprocess.run(["sox", "-n", "-r", "24000", "-c", "1", str(voices / "v.wav"), *effect], check=True)
    with pytest.raises(VoiceError, match=problem):
        PromptBuilder(models, voices, tmp_path / "cache").prompt(Persona(role="Hi", voice="v.wav"))


def test_a_role_longer_than_the_context_is_refused_before_any_step(models, tmp_path):
    from agent.engine.engine import ModelBackend

    builder = PromptBuilder(models, tmp_path / "voices", tmp_path / "cache")
    call = builder.call(Persona(role=" ".join(["word"] * 60), voice="NATF2"))
    with pytest.raises(PromptTooLong, match="context is 40"):
        ModelBackend(models.mimi, models.lm, num_slots=1).join(0, call)


def test_the_call_carries_the_personas_sampling_and_seed(models, tmp_path):
    persona = Persona(role="Hi", voice="NATF2",
                      sampling={"text": {"temperature": 0.5, "top_k": 10}, "audio": {"top_k": 100}, "seed": 7})
    call = PromptBuilder(models, tmp_path / "v", tmp_path / "c").call(persona)
    assert (call.sampling.text_temperature, call.sampling.text_top_k, call.sampling.audio_top_k) == (0.5, 10, 100)
    assert call.seed == 7
    assert PromptBuilder(models, tmp_path / "v", tmp_path / "c").call(persona, seed=3).seed == 3
