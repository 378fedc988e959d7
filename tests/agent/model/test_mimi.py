"""Mimi against the upstream reference vectors, and its rows as independent streams."""

import dataclasses
import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from agent.model.mimi import Mimi, MimiConfig, state_dict_from_checkpoint

TINY_CONFIG = Path(__file__).parents[2] / "data" / "personaplex-tiny" / "config.json"
CALLER_WAV = Path(__file__).parents[3] / "personas" / "examples" / "acme-caller.wav"


@pytest.fixture(scope="module")
def reference_config(reference_dir: Path) -> MimiConfig:
    return MimiConfig.from_upstream(json.loads((reference_dir / "config.json").read_text())["mimi"])


@pytest.fixture(scope="module")
def reference_mimi(reference_dir: Path, reference_config: MimiConfig) -> Mimi:
    return Mimi.from_safetensors(reference_dir / "mimi.safetensors", reference_config)


@pytest.fixture(scope="module")
def golden(reference_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(reference_dir / "mimi_golden.safetensors")


def caller_audio(rows: int, frames: int, frame_size: int) -> torch.Tensor:
    """Speech from the example caller recording, a different stretch per row: [rows, 1, frames * frame_size]."""
    with wave.open(str(CALLER_WAV)) as recording:
        samples = np.frombuffer(recording.readframes(recording.getnframes()), dtype=np.int16)
    audio = torch.from_numpy(samples.astype(np.float32) / 32768)
    length = frames * frame_size
    starts = [row * (len(audio) - length) // max(rows - 1, 1) for row in range(rows)]
    return torch.stack([audio[start:start + length] for start in starts])[:, None]


def test_tiny_preset_is_the_reference_config():
    assert MimiConfig.tiny() == MimiConfig.from_upstream(json.loads(TINY_CONFIG.read_text())["mimi"])


def test_full_preset_sizes():
    config = MimiConfig.full()
    assert (config.frame_size, config.hop_length, config.resample_stride) == (1920, 960, 2)
    assert (config.dimension, config.codebook_dim) == (512, 256)
    assert (config.total_codebooks, config.num_codebooks) == (32, 8)


@pytest.mark.reference
def test_streaming_encode_matches_reference(reference_mimi: Mimi, golden: dict[str, torch.Tensor], reference_rounding):
    pcm = golden["pcm_in"]
    state = reference_mimi.init_encoder_state(1)
    with torch.no_grad():
        codes = [reference_mimi.encode_step(frame, state) for frame in pcm.split(1920, dim=-1)]
    assert torch.equal(torch.cat(codes, dim=-1), golden["codes"])


@pytest.mark.reference
def test_streaming_decode_matches_reference(reference_mimi: Mimi, golden: dict[str, torch.Tensor]):
    codes = golden["codes"]
    state = reference_mimi.init_decoder_state(1)
    with torch.no_grad():
        pcm = [reference_mimi.decode_step(codes[..., t:t + 1], state) for t in range(codes.shape[-1])]
    # The reference's 1e-4 assumes audio within [-1, 1]; random weights give peaks of 5.6e5, where one
    # float32 step is 0.06 and CPUs of another instruction set (oneDNN picks its kernels per ISA) round
    # differently by ~1e-6 of the peak. So 1e-5 of the peak: ten times that rounding, far below any wrong step.
    peak = golden["pcm_out"].abs().max()
    torch.testing.assert_close(torch.cat(pcm, dim=-1), golden["pcm_out"], rtol=0, atol=1e-5 * float(peak))


@pytest.mark.reference
def test_encode_equals_streaming_codes(reference_mimi: Mimi, golden: dict[str, torch.Tensor], reference_rounding):
    with torch.no_grad():
        assert torch.equal(reference_mimi.encode(golden["pcm_in"]), golden["codes"])


def test_a_reset_row_restarts_and_leaves_the_others_alone():
    mimi = Mimi.dummy(MimiConfig.tiny(), seed=1)
    frames, reset_at, frame_size = 14, 5, mimi.config.frame_size  # 14 frames wrap the transformer's ring
    audio = caller_audio(3, frames, frame_size)  # [3, 1, frames * 1920]
    codes_in = torch.randint(0, 2048, (3, 8, frames), generator=torch.Generator().manual_seed(0))
    reset = torch.tensor([False, True, False])
    encoder, decoder = mimi.init_encoder_state(3), mimi.init_decoder_state(3)
    codes, pcm = [], []
    with torch.no_grad():
        for t, frame in enumerate(audio.split(frame_size, dim=-1)):
            if t == reset_at:
                encoder.reset(reset)
                decoder.reset(reset)
            codes.append(mimi.encode_step(frame, encoder))
            pcm.append(mimi.decode_step(codes_in[..., t:t + 1], decoder))
        codes, pcm = torch.cat(codes, dim=-1), torch.cat(pcm, dim=-1)

        def alone(row: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
            state = mimi.init_decoder_state(1)
            row_pcm = [mimi.decode_step(codes_in[row:row + 1, :, t:t + 1], state) for t in range(start, frames)]
            return mimi.encode(audio[row:row + 1, :, start * frame_size:]), torch.cat(row_pcm, dim=-1)

        for row, start in [(0, 0), (1, reset_at), (2, 0)]:
            row_codes, row_pcm = alone(row, start)
            assert torch.equal(codes[row:row + 1, :, start:], row_codes)
            torch.testing.assert_close(pcm[row:row + 1, :, start * frame_size:], row_pcm, rtol=1e-5, atol=1e-5)


def test_unused_codebooks_are_skipped_and_unknown_tensors_named(reference_dir: Path):
    tensors = load_file(reference_dir / "mimi.safetensors")
    last = "quantizer.rvq_rest.vq.layers.6._codebook."
    extra = {name.replace(".6.", ".7."): tensors[name] for name in tensors if name.startswith(last)}
    config = MimiConfig.tiny()
    with_more_codebooks = Mimi(dataclasses.replace(config, total_codebooks=9))
    state_dict_from_checkpoint(tensors | extra, with_more_codebooks)  # the 9th codebook is not used
    with pytest.raises(ValueError, match=r"unknown tensors \[.*rvq_rest\.vq\.layers\.7\._codebook"):
        state_dict_from_checkpoint(tensors | extra, Mimi(config))
    del tensors["decoder.model.0.conv.conv.bias"]
    with pytest.raises(ValueError, match=r"missing tensors .*decoder\.model\.0\.conv\.bias"):
        state_dict_from_checkpoint(tensors, Mimi(config))


def test_dummy_weights_depend_only_on_the_seed():
    first, second = (Mimi.dummy(MimiConfig.tiny(), seed=3) for _ in range(2))
    other = Mimi.dummy(MimiConfig.tiny(), seed=4)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(first.encoder.model[0].conv.weight, other.encoder.model[0].conv.weight)
