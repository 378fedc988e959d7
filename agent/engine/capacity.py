"""How many slots fit on a device: GPU memory, not time, bounds the calls per GPU.

Each slot holds a full-context KV ring in every layer of the temporal transformer; everything else
a slot owns (codec streams, token rings, the depformer's scratch) is small beside it.
"""

from __future__ import annotations

import torch

from agent.model.kv_cache import KVDtype, kv_bytes_per_position
from agent.model.lm import LMConfig

WORKSPACE_BYTES = 4 << 30  # activations, CUDA graph pools, the persona cache's first entries


def kv_bytes_per_slot(config: LMConfig, dtype: torch.dtype, kv_dtype: KVDtype = "bf16") -> int:
    """Keys and values of every layer for `context` frames: 32 x 2 x 3000 x 4096 x 2 B = 1.57 GB at 7B
    in bf16; 32 x 2 x 3000 x 32 x (128 + 4) B = 0.81 GB in FP8 (values and a scale per head)."""
    per_position = kv_bytes_per_position(config.num_heads, config.dim // config.num_heads, dtype, kv_dtype)
    return config.num_layers * config.context * per_position


def slots_that_fit(config: LMConfig, dtype: torch.dtype, free_bytes: int,
                   workspace_bytes: int = WORKSPACE_BYTES, extra_bytes_per_slot: int = 0,
                   kv_dtype: KVDtype = "bf16") -> int:
    """`extra_bytes_per_slot`: what else each slot holds at full size (the recogniser's KV ring)."""
    per_slot = kv_bytes_per_slot(config, dtype, kv_dtype) + extra_bytes_per_slot
    return max(0, (free_bytes - workspace_bytes) // per_slot)
