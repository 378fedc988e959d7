"""How many slots fit on a device: GPU memory, not time, bounds the calls per GPU.

Each slot holds a full-context KV ring in every layer of the temporal transformer; everything else
a slot owns (codec streams, token rings, the depformer's scratch) is small beside it.
"""

from __future__ import annotations

import torch

from agent.model.lm import LMConfig

WORKSPACE_BYTES = 4 << 30  # activations, CUDA graph pools, the persona cache's first entries


def kv_bytes_per_slot(config: LMConfig, dtype: torch.dtype) -> int:
    """Keys and values of every layer for `context` frames: 32 x 2 x 3000 x 4096 x 2 B = 1.57 GB at 7B."""
    return config.num_layers * 2 * config.context * config.dim * torch.finfo(dtype).bits // 8


def slots_that_fit(config: LMConfig, dtype: torch.dtype, free_bytes: int,
                   workspace_bytes: int = WORKSPACE_BYTES, extra_bytes_per_slot: int = 0) -> int:
    """`extra_bytes_per_slot`: what else each slot holds at full size (the recogniser's KV ring)."""
    return max(0, (free_bytes - workspace_bytes) // (kv_bytes_per_slot(config, dtype) + extra_bytes_per_slot))
