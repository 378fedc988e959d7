"""Per-slot random numbers that do not depend on which other slots share the batch.

A call's samples must be reproducible from its seed whether it runs alone or beside 40 others,
and the step must stay capturable in a CUDA graph. `torch.Generator` is one stream per batch, so
instead each slot hashes (seed, step counter, stream, index) into uniform noise: a counter-based
generator, pure tensor arithmetic, the same on every device.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_MULT = 0x45D9F3B  # small enough that a 32-bit value times it fits in int64


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Mueller's), on int64 tensors holding values below 2**32."""
    x = ((x >> 16) ^ x) * _MULT & _MASK32
    x = ((x >> 16) ^ x) * _MULT & _MASK32
    return (x >> 16) ^ x


def uniform_noise(seeds: torch.Tensor, counters: torch.Tensor, size: int, first_stream: int = 0,
                  streams: int = 1) -> torch.Tensor:
    """Uniform floats in (0, 1), shape [B, streams, size], from per-row seeds [B] and counters [B] (int64).

    Streams first_stream.. separate independent uses within one step (text, then each audio codebook);
    all of them come from one set of kernels.
    """
    device = seeds.device
    stream = torch.arange(first_stream, first_stream + streams, device=device, dtype=torch.long)
    index = torch.arange(size, device=device, dtype=torch.long)
    x = _mix32((seeds[:, None] & _MASK32) ^ (stream * 0x9E37))  # [B, streams]
    x = _mix32(x ^ (counters[:, None] & _MASK32))
    x = _mix32(x[:, :, None] ^ index)  # [B, streams, size]
    return ((x >> 8).float() + 0.5) / float(1 << 24)
