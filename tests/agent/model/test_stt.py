"""The recogniser (Kyutai STT) against Kyutai's own implementation, through the tiny reference vectors."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from agent.model.checkpoint import CheckpointError
from agent.model.hub import ModelFilesError
from agent.model.loading import ModelSpecError
from agent.model.mimi import Mimi, MimiConfig
from agent.model.stt import StreamingStt, SttConfig, SttLM
from agent.model.stt_loading import dummy_stt_lm, load_stt, load_stt_lm

DEFAULT_STT_REFERENCE_DIR = Path(__file__).parents[2] / "data" / "stt-tiny"


@pytest.fixture(scope="module")
def stt_reference_dir() -> Path:
    """The STT reference vectors (PLEXLINE_STT_REFERENCE_DIR, default the tiny set in tests/data)."""
    return Path(os.environ.get("PLEXLINE_STT_REFERENCE_DIR", DEFAULT_STT_REFERENCE_DIR))


@pytest.fixture(scope="module")
def reference_config(stt_reference_dir) -> dict:
    return json.loads((stt_reference_dir / "config.json").read_text())


@pytest.fixture(scope="module")
def golden(stt_reference_dir) -> dict[str, torch.Tensor]:
    return load_file(stt_reference_dir / "golden.safetensors")


@pytest.fixture(scope="module")
def stt(stt_reference_dir):
    config = SttConfig.from_json(stt_reference_dir / "config.json")
    return load_stt_lm(stt_reference_dir / "stt.safetensors", config, dtype=torch.float32)


def reference_mimi(folder: Path, config: dict, codebooks: int) -> Mimi:
    mimi_config = MimiConfig.from_upstream({**config["mimi"], "num_codebooks": codebooks})
    return Mimi.from_safetensors(folder / "mimi.safetensors", mimi_config)


def run(stt, codes: torch.Tensor):
    """Step a fresh stream through codes [B, 32, T]: tokens [B, T], heads [B, H, T, 6], logits [B, T, card]."""
    stream = StreamingStt(stt)
    state = stream.init_state(codes.shape[0])
    steps = [stream.step(state, codes[:, :, t]) for t in range(codes.shape[-1])]
    return (torch.stack([s.text for s in steps], dim=1), torch.stack([s.heads for s in steps], dim=2),
            torch.stack([s.text_logits for s in steps], dim=1))


def test_tiny_preset_is_the_reference_config():
    assert SttConfig.tiny() == SttConfig.from_json(DEFAULT_STT_REFERENCE_DIR / "config.json")


def test_released_sizes():
    config = SttConfig.stt_1b_en_fr()
    assert (config.n_q, config.extra_heads, config.delay_frames, config.prefix_frames) == (32, 4, 7, 0)
    assert int(config.hidden_scale * config.dim) * 2 // 3 == 5632  # the released MLP width
    with torch.device("meta"):
        count = sum(p.numel() for p in SttLM(config).parameters())
    assert 0.9e9 < count < 1.1e9


@pytest.mark.parametrize("option", [{"dep_q": 8}, {"delays": [0] + [1] * 32}, {"norm": "layer_norm"}])
def test_configs_it_cannot_run_are_refused(reference_config, option):
    with pytest.raises(ValueError, match="unsupported STT"):
        SttConfig.from_upstream({**reference_config["lm"], **option}, reference_config["stt_config"])


@pytest.mark.reference
def test_weights_of_another_size_are_refused(stt_reference_dir):
    config = dataclasses.replace(SttConfig.tiny(), num_layers=3)
    with pytest.raises(CheckpointError, match="missing"):
        load_stt_lm(stt_reference_dir / "stt.safetensors", config, dtype=torch.float32)


@pytest.mark.reference
def test_mimi_gives_the_reference_32_codes(stt_reference_dir, reference_config, golden):
    mimi = reference_mimi(stt_reference_dir, reference_config, codebooks=32)
    with torch.no_grad():
        assert torch.equal(mimi.encode(golden["pcm_in"]), golden["codes"])


@pytest.mark.reference
def test_the_agents_8_codes_are_the_first_8_of_the_32(stt_reference_dir, reference_config, golden):
    mimi = reference_mimi(stt_reference_dir, reference_config, codebooks=8)
    with torch.no_grad():
        assert torch.equal(mimi.encode(golden["pcm_in"]), golden["codes"][:, :8])


@pytest.mark.reference
def test_text_tokens_and_extra_heads_match_the_reference(stt, golden):
    tokens, heads, logits = run(stt, golden["codes"])
    assert torch.equal(tokens, golden["text_tokens"])
    torch.testing.assert_close(logits, golden["text_logits"], rtol=0, atol=1e-4)
    torch.testing.assert_close(heads, golden["extra_heads"], rtol=0, atol=1e-5)


@pytest.mark.reference
def test_rows_are_independent_streams(stt, golden):
    """Row 0 runs the reference; row 1 other codes and a reset (a new call) halfway: row 0 is unchanged."""
    codes = golden["codes"][0]
    generator = torch.Generator().manual_seed(1)
    other = torch.randint(0, stt.config.card, codes.shape, generator=generator)
    stream = StreamingStt(stt)
    state = stream.init_state(2)
    tokens, restarted = [], []
    for t in range(codes.shape[-1]):
        if t == 30:
            state.reset(torch.tensor([False, True]))
        out = stream.step(state, torch.stack([codes[:, t], other[:, t] if t < 30 else codes[:, t - 30]]))
        tokens.append(out.text[0])
        if t >= 30:
            restarted.append(out.text[1])
    assert torch.equal(torch.stack(tokens), golden["text_tokens"][0])
    assert torch.equal(torch.stack(restarted), golden["text_tokens"][0, :len(restarted)])


def released_folder(tmp_path: Path, reference: Path, sentencepiece_model: Path) -> Path:
    """A folder laid out as a released STT repository, with the tiny weights."""
    folder = tmp_path / "stt"
    folder.mkdir()
    config = json.loads((reference / "config.json").read_text())
    released = {**config["lm"], "stt_config": config["stt_config"], "model_type": "stt",
                "mimi_name": "mimi-pytorch-e351c8d8@125.safetensors", "tokenizer_name": "tokenizer.model"}
    (folder / "config.json").write_text(json.dumps(released))
    shutil.copy(reference / "stt.safetensors", folder / "model.safetensors")
    shutil.copy(sentencepiece_model, folder / "tokenizer.model")
    return folder


@pytest.mark.reference
def test_a_local_folder_loads_as_the_release_does(tmp_path, stt_reference_dir, sentencepiece_model, golden):
    folder = released_folder(tmp_path, stt_reference_dir, sentencepiece_model)
    models = load_stt(f"local:{folder}", device="cpu")
    assert models.config == SttConfig.from_json(stt_reference_dir / "config.json")
    assert models.tokenizer.vocab_size == 96
    tokens, _, _ = run(models.lm, golden["codes"])
    assert torch.equal(tokens, golden["text_tokens"])


@pytest.mark.reference
def test_a_local_folder_without_its_tokenizer_is_an_error(tmp_path, stt_reference_dir, sentencepiece_model):
    folder = released_folder(tmp_path, stt_reference_dir, sentencepiece_model)
    (folder / "tokenizer.model").unlink()
    with pytest.raises(ModelFilesError, match="missing tokenizer.model"):
        load_stt(f"local:{folder}", device="cpu")


@pytest.mark.reference
def test_truncated_weights_are_an_error(tmp_path, stt_reference_dir, sentencepiece_model):
    folder = released_folder(tmp_path, stt_reference_dir, sentencepiece_model)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelFilesError, match="truncated"):
        load_stt(f"local:{folder}", device="cpu")


def test_the_tiny_dummy_steps_and_says_it_is_random():
    models = load_stt("dummy", device="cpu")
    assert models.name == "dummy:tiny (RANDOM WEIGHTS)"
    out = StreamingStt(models.lm).step(StreamingStt(models.lm).init_state(3), torch.zeros(3, 32, dtype=torch.long))
    assert out.text.shape == (3,) and out.heads.shape == (3, 4, 6)
    torch.testing.assert_close(out.heads.sum(dim=-1), torch.ones(3, 4))


def test_an_unknown_spec_is_refused():
    with pytest.raises(ModelSpecError, match="unknown STT model"):
        load_stt("whisper", device="cpu")


def test_saved_dummy_weights_load_back(tmp_path):
    lm = dummy_stt_lm(SttConfig.tiny(), dtype=torch.float32)
    save_file(lm.state_dict(), tmp_path / "w.safetensors")
    loaded = load_stt_lm(tmp_path / "w.safetensors", SttConfig.tiny(), dtype=torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(lm.state_dict().values(), loaded.state_dict().values()))
