"""LM weights: from a safetensors file with upstream tensor names, or random ("dummy") for a config.

The model is built on the meta device and its parameters are then assigned, so memory for the
weights is allocated once, on the target device. A checkpoint may hold the depformer for 8 steps
only (the layout PersonaPlex's loader expands): see `expand_depformer`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from agent.model.lm import LM, LMConfig

log = logging.getLogger(__name__)

PER_STEP_GROUPS = ("gating", "linears", "depformer_in", "depformer_emb")
STORED_STEPS = 8  # the depformer steps an 8-step checkpoint holds; steps 8..15 reuse 0..7


class CheckpointError(ValueError):
    """The weights do not fit the model: the message names the missing, unexpected and misshapen tensors."""


def meta_lm(config: LMConfig, dtype: torch.dtype = torch.float32) -> LM:
    """An LM whose parameters have shapes and dtype but no storage."""
    with torch.device("meta"):
        return LM(config).to(dtype)


def expand_depformer(weights: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Expand an 8-step depformer to 16 steps, as upstream's loader does.

    A depformer self-attention tensor holding half the expected steps is concatenated with itself
    (steps 8..15 take 0..7), and a missing `{group}.{n}.` tensor, n in 8..15, takes `{group}.{n-8}.`.
    """
    weights = dict(weights)
    for name, tensor in weights.items():
        if name.startswith("depformer.") and ".self_attn." in name and name in expected:
            if tensor.shape[0] * 2 == expected[name][0] and tensor.shape[1:] == expected[name][1:]:
                weights[name] = torch.cat([tensor, tensor], dim=0)
    pattern = re.compile(rf"(^|\.)({'|'.join(PER_STEP_GROUPS)})\.(\d+)\.")
    for name in expected:
        match = pattern.search(name)
        if name in weights or match is None or not STORED_STEPS <= int(match[3]) < 2 * STORED_STEPS:
            continue
        source = name[:match.start(3)] + str(int(match[3]) - STORED_STEPS) + name[match.end(3):]
        if source in weights:
            weights[name] = weights[source]
    return weights


def check_weights(weights: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> None:
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    misshapen = sorted(f"{name} {tuple(weights[name].shape)} (expected {tuple(expected[name])})"
                       for name in set(weights) & set(expected) if weights[name].shape != expected[name])
    problems = [f"{what} ({len(names)}): {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}"
                for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
                if names]
    if problems:
        raise CheckpointError("LM weights do not fit the model config: " + "; ".join(problems))


def load_lm(path: str | Path, config: LMConfig, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.bfloat16) -> LM:
    """The LM of `config` with the weights of the safetensors file at `path` (upstream names)."""
    model = meta_lm(config, dtype)
    expected = {name: p.shape for name, p in model.state_dict().items()}
    weights = expand_depformer(load_file(str(path), device=str(device)), expected)
    check_weights(weights, expected)
    model.load_state_dict({name: w.to(device=device, dtype=dtype) for name, w in weights.items()}, assign=True)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def dummy_lm(config: LMConfig, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
             seed: int = 0) -> LM:
    """The LM of `config` with random weights (norms at one, the rest normal with std 0.02)."""
    log.warning("LM with RANDOM (dummy) weights: its output is noise, for benchmarks and tests only")
    model = meta_lm(config, dtype).to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("alpha"):  # RMSNorm weights
            param.fill_(1.0)
        else:
            param.normal_(0.0, 0.02, generator=generator)
    return model.eval().requires_grad_(False)
