import pytest
import torch

from agent.model.checkpoint import dummy_lm
from agent.model.lm import LMConfig
from agent.model.persona_prompt import (
    SILENCE_CODES,
    SINE_CODES,
    prefill_persona,
    prompt_frames,
)
from agent.model.stream import StreamingLM
from voices.prompt import VoicePrompt


def test_frames_are_voice_silence_text_silence():
    voice = torch.arange(8 * 9).view(8, 9)
    frames = prompt_frames(voice, [36, 20, 82], text_padding_id=3, silence_frames=2)
    assert frames.shape == (17, 9 + 2 + 3 + 2)
    assert frames[0].tolist() == [3] * 11 + [36, 20, 82] + [3, 3]
    assert torch.equal(frames[1:9, :9], voice)
    assert (frames[1:9, 9:] == torch.tensor(SILENCE_CODES)[:, None]).all()
    assert (frames[9:] == torch.tensor(SINE_CODES)[:, None]).all()


def test_a_voice_of_another_model_is_refused():
    stream = StreamingLM(dummy_lm(LMConfig.tiny(), dtype=torch.float32))
    voice = VoicePrompt(embeddings=torch.zeros(5, 1, 1, 64), cache=torch.zeros(1, 17, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="stored voice of another model"):
        prefill_persona(stream, stream.init_state(1), voice, [1, 2])


@pytest.mark.reference
def test_a_voice_stepped_from_its_codes_is_upstreams_voice_file(reference_dir, reference_rounding):
    """voice.pt was saved by upstream after stepping `voice_audio` through the tiny Mimi and LM."""
    import json

    from safetensors.torch import load_file

    from agent.model.checkpoint import load_lm
    from agent.model.mimi import Mimi, MimiConfig
    from agent.model.persona_prompt import voice_prompt_from_codes
    from voices.prompt import load_voice_prompt

    config = json.loads((reference_dir / "config.json").read_text())
    mimi = Mimi.from_safetensors(reference_dir / "mimi.safetensors", MimiConfig.from_upstream(config["mimi"]))
    lm = load_lm(reference_dir / "lm16.safetensors", LMConfig.from_upstream(config["lm"]), dtype=torch.float32)
    audio = load_file(reference_dir / "lm_golden.safetensors")["voice_audio"]  # [1, samples]
    frames = -(-audio.shape[1] // 1920)
    padded = torch.nn.functional.pad(audio, (0, frames * 1920 - audio.shape[1]))
    codes = mimi.encode(padded[None])[0]

    made = voice_prompt_from_codes(StreamingLM(lm), codes, "test")
    upstream = load_voice_prompt(reference_dir / "voice.pt")
    assert torch.equal(made.cache, upstream.cache)
    torch.testing.assert_close(made.embeddings, upstream.embeddings, rtol=0, atol=1e-5)
