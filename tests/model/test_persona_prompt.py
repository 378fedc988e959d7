import pytest
import torch

from agent.model.checkpoint import dummy_lm
from agent.model.lm import LMConfig
from agent.model.persona_prompt import SILENCE_CODES, SINE_CODES, StoredVoice, prefill_persona, prompt_frames
from agent.model.stream import StreamingLM


def test_frames_are_voice_silence_text_silence():
    voice = torch.arange(8 * 9).view(8, 9)
    frames = prompt_frames(voice, [36, 20, 82], text_padding_id=3)
    assert frames.shape == (17, 9 + 2 + 3 + 2)
    assert frames[0].tolist() == [3] * 11 + [36, 20, 82] + [3, 3]
    assert torch.equal(frames[1:9, :9], voice)
    assert (frames[1:9, 9:] == torch.tensor(SILENCE_CODES)[:, None]).all()
    assert (frames[9:] == torch.tensor(SINE_CODES)[:, None]).all()


@pytest.mark.reference
def test_stored_voice_loads(reference_dir):
    voice = StoredVoice.load(reference_dir / "voice.pt")
    assert voice.embeddings.shape[1] == LMConfig.from_json(reference_dir / "config.json").dim
    assert voice.tokens.shape[0] == 17


def test_a_file_that_is_no_voice_is_refused(tmp_path):
    torch.save({"embeddings": torch.zeros(3, 32)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a voice prompt file"):
        StoredVoice.load(tmp_path / "bad.pt")


def test_a_voice_of_another_model_is_refused():
    stream = StreamingLM(dummy_lm(LMConfig.tiny(), dtype=torch.float32))
    voice = StoredVoice(embeddings=torch.zeros(5, 64), tokens=torch.zeros(17, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="stored voice of another model"):
        prefill_persona(stream, stream.init_state(1), voice, [1, 2])
