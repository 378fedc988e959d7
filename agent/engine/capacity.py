"""How many slots fit on a device, and how many calls it was measured to hold in real time.

GPU memory bounds the calls per GPU: each slot holds a full-context KV ring in every layer of the
temporal transformer; what else a slot owns (codec streams, token rings, the depformer's scratch)
is small beside it. Beside the slots the engine needs room that is no call's: activations and the
CUDA graph's pool (`WORKSPACE_BYTES`), the persona cache (`PREFIX_CACHE_BYTES`), and the scratch
ring of the one cold persona being prefilled at a time (at most a context: one slot's KV).
`slots_that_fit` keeps that room, so a cold join with every slot taken does not run out of memory.
The KV ring's bytes follow its dtype (`agent.model.kv_cache`: bf16, or FP8 with scales).

Time bounds it too: the churn benchmark (`plexline bench churn`) measures the largest number of
calls whose steps stay within 80 ms while calls join and leave, and writes it with the GPU and the
precisions it ran; `rated_calls` reads it back, so a worker offers that rather than the memory bound.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from agent.model.kv_cache import KVDtype, kv_bytes_per_position
from agent.model.lm import LMConfig

WORKSPACE_BYTES = 3 << 30  # activations, CUDA graph pools, a prefill chunk's activations
PREFIX_CACHE_BYTES = 2 << 30  # persona prefixes kept on the device (8 s voice + 80-token role: ~100 MB each)


def kv_bytes_per_slot(config: LMConfig, dtype: torch.dtype, kv_dtype: KVDtype = "bf16") -> int:
    """Keys and values of every layer for `context` frames: 32 x 2 x 3000 x 4096 x 2 B = 1.57 GB at 7B
    in bf16; 32 x 2 x 3000 x 32 x (128 + 4) B = 0.81 GB in FP8 (values and a scale per head)."""
    per_position = kv_bytes_per_position(config.num_heads, config.dim // config.num_heads, dtype, kv_dtype)
    return config.num_layers * config.context * per_position


def reserved_bytes(config: LMConfig, dtype: torch.dtype, kv_dtype: KVDtype = "bf16",
                   prefix_cache_bytes: int = PREFIX_CACHE_BYTES, workspace_bytes: int = WORKSPACE_BYTES) -> int:
    """The room no slot may take: workspace, the persona cache, one cold persona's prefill scratch."""
    return workspace_bytes + prefix_cache_bytes + kv_bytes_per_slot(config, dtype, kv_dtype)


def slots_that_fit(config: LMConfig, dtype: torch.dtype, free_bytes: int, extra_bytes_per_slot: int = 0,
                   kv_dtype: KVDtype = "bf16", prefix_cache_bytes: int = PREFIX_CACHE_BYTES,
                   workspace_bytes: int = WORKSPACE_BYTES) -> int:
    """`extra_bytes_per_slot`: what else each slot holds at full size (the recogniser's KV ring)."""
    per_slot = kv_bytes_per_slot(config, dtype, kv_dtype) + extra_bytes_per_slot
    room = free_bytes - reserved_bytes(config, dtype, kv_dtype, prefix_cache_bytes, workspace_bytes)
    return max(0, room // per_slot)


def rated_calls(result_file: Path, device: str, weights: str, kv_dtype: KVDtype,
                recogniser: str | None = None) -> int | None:
    """The calls a churn benchmark's JSON rates for this GPU, precisions (bf16, fp8) and caller
    recogniser (None: none beside the agent); None when it rates another setup."""
    result = json.loads(result_file.read_text())
    setup = (result.get("device"), result.get("weights"), result.get("kv_dtype"), result.get("recogniser"))
    same = setup == (device, weights, kv_dtype, recogniser)
    rated = result.get("rated_calls")
    return rated if same and isinstance(rated, int) and rated > 0 else None
