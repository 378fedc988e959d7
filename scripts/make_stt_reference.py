"""Make the STT reference vectors (tests/data/stt-tiny/) with Kyutai's `moshi` package as the oracle.

The oracle is never a dependency of plexline: install it beside plexline's torch, in a folder of
its own, and put that folder on PYTHONPATH for this script only:

    pip install --no-deps --target ../stt-oracle moshi==0.2.13 einops
    PYTHONPATH=../stt-oracle python scripts/make_stt_reference.py tests/data/stt-tiny

It builds, from fixed seeds, a tiny Mimi with 32 codebooks and a tiny STT LM of the structure of
`kyutai/stt-1b-en_fr` (32 audio streams, no depformer, every delay 0, four extra heads of six
classes: the semantic VAD), speaks a sentence with espeak-ng, and records what upstream makes of
it, run as Kyutai's `stt_from_file_pytorch.py` runs it: the silence prefix of `stt_config`, the
audio frame by frame through Mimi's streaming encoder and `LMGen.step_with_extra_heads` (greedy),
then `audio_delay_seconds` of silence to flush the text. README.md beside the output says what
each file holds.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch
from moshi.models import LMGen, loaders
from safetensors.torch import save_file

SEED = 20261202
SENTENCE = "Hello, I would like to check the status of my order, please."
FRAME_SIZE = 1920
SAMPLE_RATE = 24_000

MIMI = {
    "seanet": {
        "channels": 1, "dimension": 32, "causal": True, "n_filters": 4, "n_residual_layers": 1,
        "activation": "ELU", "compress": 2, "dilation_base": 2, "disable_norm_outer_blocks": 0,
        "kernel_size": 7, "residual_kernel_size": 3, "last_kernel_size": 3, "norm": "none",
        "pad_mode": "constant", "ratios": [8, 6, 5, 4], "true_skip": True,
    },
    # Small codebooks (128 entries of 8) keep 32 of them under 300 kB.
    "quantizer": {"dimension": 8, "n_q": 32, "bins": 128, "input_dimension": 32, "output_dimension": 32},
    # A context longer than the session (in 25 Hz latent frames): Kyutai's and PersonaPlex's rings
    # differ only once full, and the agent's Mimi is PersonaPlex's (see tests/data/stt-tiny/README.md).
    "transformer": {
        "d_model": 32, "num_heads": 2, "num_layers": 2, "causal": True, "layer_scale": 0.01, "context": 128,
        "conv_layout": True, "max_period": 10000, "gating": "none", "norm": "layer_norm",
        "positional_embedding": "rope", "dim_feedforward": 64, "input_dimension": 32, "output_dimensions": [32],
    },
    "channels": 1,
    "sample_rate": SAMPLE_RATE,
    "frame_rate": 12.5,
}

LM = {
    "dim": 32, "text_card": 96, "existing_text_padding_id": 3, "n_q": 32, "dep_q": 0, "card": 128,
    "num_heads": 2, "num_layers": 2, "hidden_scale": 4.125, "causal": True, "layer_scale": None,
    "context": 20, "max_period": 100000, "gating": "silu", "norm": "rms_norm_f32",
    "positional_embedding": "rope", "depformer_dim": 16, "depformer_dim_feedforward": 66,
    "depformer_num_heads": 2, "depformer_num_layers": 2, "depformer_multi_linear": False,
    "depformer_context": 8, "depformer_max_period": 10000, "depformer_gating": "silu",
    "depformer_pos_emb": "none", "depformer_weights_per_step": True,
    "extra_heads_num_heads": 4, "extra_heads_dim": 6, "delays": [0] * 33,
}

STT = {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.16}


def speech(sentence: str) -> torch.Tensor:
    """The sentence spoken by espeak-ng at 24 kHz: [1, 1, samples] float32, whole frames."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(path), sentence], check=True)
        resampled = Path(folder) / "speech24k.wav"
        subprocess.run(["sox", "-D", str(path), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(resampled)],
                       check=True)
        with wave.open(str(resampled)) as recording:
            samples = np.frombuffer(recording.readframes(recording.getnframes()), dtype=np.int16)
    audio = torch.from_numpy(samples.astype(np.float32) / 32768)
    audio = torch.nn.functional.pad(audio, (0, -len(audio) % FRAME_SIZE))
    return audio[None, None]


@torch.no_grad()
def randomize(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter and codebook statistic random (norm weights near one), so none is left unchecked."""
    for name, tensor in module.state_dict().items():
        if not tensor.dtype.is_floating_point:
            continue
        if name.endswith("_initialized"):
            tensor.fill_(1.0)
        elif name.endswith("cluster_usage"):
            tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
        elif name.endswith(("alpha", "norm1.weight", "norm2.weight")):
            tensor.copy_(1 + 0.1 * torch.randn(tensor.shape, generator=generator))
        elif name.endswith("bias"):
            tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
        else:
            fan_in = tensor[0].numel() if tensor.dim() >= 2 else 1
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))


def released_names(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict under the released checkpoints' names (`self_attn.in_proj_weight`,
    `self_attn.out_proj.weight`), which this moshi version renames on load (`in_projs.0.weight`)."""
    state = {}
    for name, tensor in module.state_dict().items():
        name = name.replace("self_attn.in_projs.0.weight", "self_attn.in_proj_weight")
        state[name.replace("self_attn.out_projs.0.weight", "self_attn.out_proj.weight")] = tensor.contiguous()
    return state


@torch.no_grad()
def main(out: Path) -> None:
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    mimi = loaders.get_mimi(None, MIMI, device="cpu", num_codebooks=MIMI["quantizer"]["n_q"])
    randomize(mimi, generator)
    lm = loaders.get_moshi_lm(None, lm_kwargs=LM, device="cpu", dtype=torch.float32)
    randomize(lm, generator)
    lm.eval()
    # Upstream loads the released names into the models that made the vectors.
    lm.load_state_dict(released_names(lm))
    mimi.load_state_dict(released_names(mimi))

    audio = speech(SENTENCE)
    prefix = math.ceil(STT["audio_silence_prefix_seconds"] * 12.5)
    suffix = math.ceil(STT["audio_delay_seconds"] * 12.5)
    silence = torch.zeros(1, 1, FRAME_SIZE)
    pcm = torch.cat([silence] * prefix + [audio] + [silence] * suffix, dim=-1)

    lm_gen = LMGen(lm, use_sampling=False, temp=0.0, temp_text=0.0)
    codes, text, heads, logits = [], [], [], []
    lm_gen.on_text_logits_hook = lambda step_logits: logits.append(step_logits[:, 0, 0].clone())
    with mimi.streaming(1), lm_gen.streaming(1):
        for frame in pcm.split(FRAME_SIZE, dim=-1):
            frame_codes = mimi.encode(frame)  # [1, 32, 1]
            codes.append(frame_codes)
            tokens, extra = lm_gen.step_with_extra_heads(frame_codes)
            text.append(tokens[:, 0, 0])
            heads.append(torch.stack([head[:, 0] for head in extra], dim=1))  # [1, 4, 6]

    out.mkdir(parents=True, exist_ok=True)
    save_file(released_names(mimi), out / "mimi.safetensors")
    save_file(released_names(lm), out / "stt.safetensors")
    save_file({
        "pcm_in": pcm.contiguous(),
        "codes": torch.cat(codes, dim=-1).contiguous(),
        "text_tokens": torch.stack(text, dim=1).contiguous(),
        "text_logits": torch.stack(logits, dim=1).float().contiguous(),
        "extra_heads": torch.stack(heads, dim=2).float().contiguous(),
    }, out / "golden.safetensors")
    config = {"mimi": MIMI, "lm": LM, "stt_config": STT, "model_type": "stt"}
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    print(f"{out}: {pcm.shape[-1] // FRAME_SIZE} frames ({prefix} silence, {suffix} flush)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the vectors, e.g. tests/data/stt-tiny")
    main(parser.parse_args().out)
