import os
from pathlib import Path

import pytest
import torch

from voices.prompt import VoicePrompt, VoicePromptError, load_voice_prompt


class RunsCommand:
    """A pickle payload that would run a shell command when unpickled by a plain pickle.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_reference_voice_file(reference_dir):
    prompt = load_voice_prompt(reference_dir / "voice.pt", dim=32, num_codebooks=17)

    assert prompt.embeddings.shape == (11, 1, 1, 32)
    assert prompt.embeddings.dtype == torch.float32
    assert prompt.cache.shape == (1, 17, 4)
    assert prompt.cache.dtype == torch.int64


def test_save_then_load_gives_the_same_tensors(reference_dir, tmp_path):
    prompt = load_voice_prompt(reference_dir / "voice.pt")

    prompt.save(tmp_path / "copy.pt")
    again = load_voice_prompt(tmp_path / "copy.pt")

    assert torch.equal(again.embeddings, prompt.embeddings)
    assert torch.equal(again.cache, prompt.cache)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.pt"]


def test_code_in_a_voice_file_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"embeddings": torch.zeros(2, 1, 1, 4), "cache": RunsCommand(marker)}, path)

    with pytest.raises(VoicePromptError, match="evil.pt: not a voice-prompt file"):
        load_voice_prompt(path)
    assert not marker.exists()


def test_file_that_is_not_a_torch_file(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(b"\x00garbage" * 10)

    with pytest.raises(VoicePromptError, match="noise.pt: not a voice-prompt file"):
        load_voice_prompt(path)


def test_missing_file(tmp_path):
    with pytest.raises(VoicePromptError, match="nope.pt: not a voice-prompt file"):
        load_voice_prompt(tmp_path / "nope.pt")


GOOD = {"embeddings": torch.zeros(3, 1, 1, 8), "cache": torch.zeros(1, 17, 4, dtype=torch.int64)}


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ([1, 2], "expected a dict with 'embeddings' and 'cache' tensors"),
        ({"embeddings": GOOD["embeddings"]}, "expected a dict with 'embeddings' and 'cache' tensors"),
        ({**GOOD, "cache": [[1]]}, "'embeddings' and 'cache' must be tensors"),
        ({**GOOD, "embeddings": torch.zeros(3, 8)}, "embeddings [3, 8] float32, expected [steps, 1, 1, dim]"),
        ({**GOOD, "embeddings": torch.zeros(0, 1, 1, 8)}, "embeddings [0, 1, 1, 8] float32"),
        ({**GOOD, "embeddings": torch.zeros(3, 2, 1, 8)}, "embeddings [3, 2, 1, 8] float32"),
        ({**GOOD, "embeddings": torch.zeros(3, 1, 1, 8, dtype=torch.int64)}, "embeddings [3, 1, 1, 8] int64"),
        ({**GOOD, "cache": torch.zeros(17, 4, dtype=torch.int64)}, "cache [17, 4] int64, expected [1, num_"),
        ({**GOOD, "cache": torch.zeros(1, 17, 4)}, "cache [1, 17, 4] float32"),
    ],
)
def test_malformed_states(state, reason):
    with pytest.raises(VoicePromptError) as error:
        VoicePrompt.from_state(state, "x.pt")

    assert str(error.value).startswith(f"x.pt: {reason}")


def test_expected_sizes_are_checked():
    VoicePrompt.from_state(GOOD, "x.pt", dim=8, num_codebooks=17)
    with pytest.raises(VoicePromptError, match=r"expected \[steps, 1, 1, 4096\] float"):
        VoicePrompt.from_state(GOOD, "x.pt", dim=4096)
    with pytest.raises(VoicePromptError, match=r"expected \[1, 9, cache_len\] int64"):
        VoicePrompt.from_state(GOOD, "x.pt", num_codebooks=9)
