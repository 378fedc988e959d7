"""The KV ring of one attention layer, in the model's dtype or in FP8, and attention over it.

Keys and values are preallocated [B, H, capacity, head_dim]; each row writes its steps at its own
ring slots. `Visibility` says which slots a query may see (each row has its own position and its
own end of ring). A ring in the model's dtype is read by PyTorch's attention under that mask. An
FP8 ring's single steps (T = 1, every streaming step) on CUDA run the ring decode kernel of
`agent.model.cuda_kernels`, which reads the FP8 values and their scales as stored and applies the
visibility per row; everything else (prefill, the CPU) dequantises the ring and runs PyTorch's
attention under the mask: the reference the kernel is tested against. (On an H200 PyTorch's
attention reads a bf16 ring at 4 TB/s, faster than this kernel does.)

The FP8 ring stores e4m3 values with one float32 scale per written key (and value) and head
(`agent.model.fp8.quantize_rows`: amax / 448 of that head's vector, so each uses the whole range).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F

from agent.model.fp8 import FP8, dequantize_rows, quantize_rows

KVDtype = Literal["bf16", "fp8"]  # bf16: the model's own dtype (float32 on the CPU); fp8: e4m3 with scales
KV_DTYPES: tuple[KVDtype, ...] = ("bf16", "fp8")
SCALE_BYTES = 4  # one float32 scale per head and written key or value


def kv_bytes_per_position(num_heads: int, head_dim: int, dtype: torch.dtype, kv_dtype: KVDtype) -> int:
    """Bytes one ring slot takes in one layer, keys and values together."""
    if kv_dtype == "fp8":
        return 2 * num_heads * (head_dim + SCALE_BYTES)
    return 2 * num_heads * head_dim * torch.finfo(dtype).bits // 8


@dataclass
class Visibility:
    """Which ring slots each query sees: keys at positions p - window < kp <= p of the query's row.

    PersonaPlex's streaming ring hides its oldest slot once full (`capacity` set: the ring's size),
    so a step sees at most capacity - 1 earlier keys; the reference outputs depend on it. `context`
    bounds the distance (None: unbounded, the depth transformer).
    """

    positions: torch.Tensor  # [B, T] long: each query's position
    key_positions: torch.Tensor  # [B, S] long: the position each ring slot holds, -1 if empty
    capacity: int | None  # a ring that hides its oldest slot: its size; else None (no ring, or Kyutai's)
    context: int | None

    @cached_property
    def mask(self) -> torch.Tensor:
        """[B, 1, T, S] bool, for PyTorch's attention."""
        key_positions = self.key_positions[:, None, :]
        delta = self.positions[:, :, None] - key_positions  # [B, T, S]
        mask = (key_positions >= 0) & (delta >= 0)
        if self.capacity is not None:
            end = self.positions[:, -1:, None] + 1  # [B, 1, 1]
            mask &= key_positions > end - self.capacity
        if self.context is not None:
            mask &= delta < self.context
        return mask[:, None]

    @cached_property
    def window(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For one query per row: the lowest and highest visible key position [B] and the key
        positions [B, S], all int32 (what the decode kernel reads); the same rule as `mask`."""
        query = self.positions[:, -1]
        lowest = torch.zeros_like(query)
        if self.capacity is not None:
            lowest = torch.maximum(lowest, query + 2 - self.capacity)
        if self.context is not None:
            lowest = torch.maximum(lowest, query + 1 - self.context)
        return lowest.int(), query.int(), self.key_positions.int()


class KVCache:
    """Keys and values of one layer in the model's dtype: [B, H, capacity, head_dim] each."""

    def __init__(self, batch_size: int, num_heads: int, capacity: int, head_dim: int, device, dtype):
        shape = (batch_size, num_heads, capacity, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """What the ring holds, each [B, H, capacity, ...]: what a persona prefix copies."""
        return self.k, self.v

    def write(self, index: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v [B, H, T, D] at ring slots `index` [B, T] (each row its own slots)."""
        B, H, T, D = k.shape
        index = index[:, None, :, None].expand(B, H, T, D)
        self.k.scatter_(2, index, k)
        self.v.scatter_(2, index, v)

    def attend(self, q: torch.Tensor, visibility: Visibility) -> torch.Tensor:
        """Attention of q [B, H, T, D] over the ring -> [B, H, T, D]."""
        return F.scaled_dot_product_attention(q, self.k, self.v, attn_mask=visibility.mask)


class Fp8KVCache:
    """Keys and values of one layer in FP8 e4m3 [B, H, capacity, head_dim], with float32 scales
    [B, H, capacity]: one per written key (value) and head. Queries and outputs keep their dtype."""

    def __init__(self, batch_size: int, num_heads: int, capacity: int, head_dim: int, device):
        shape = (batch_size, num_heads, capacity)
        self.k = torch.zeros((*shape, head_dim), device=device, dtype=FP8)
        self.v = torch.zeros((*shape, head_dim), device=device, dtype=FP8)
        self.k_scale = torch.zeros(shape, device=device, dtype=torch.float32)
        self.v_scale = torch.zeros(shape, device=device, dtype=torch.float32)

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.k, self.v, self.k_scale, self.v_scale

    def write(self, index: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        B, H, T, D = k.shape
        index = index[:, None, :].expand(B, H, T)
        for ring, scales, x in ((self.k, self.k_scale, k), (self.v, self.v_scale, v)):
            values, scale = quantize_rows(x, fused=x.is_cuda)
            # scatter_ has no FP8 kernels: move the bytes.
            ring.view(torch.uint8).scatter_(2, index[..., None].expand(B, H, T, D), values.view(torch.uint8))
            scales.scatter_(2, index, scale)

    def attend(self, q: torch.Tensor, visibility: Visibility) -> torch.Tensor:
        if q.is_cuda and q.shape[2] == 1:  # a streaming step
            from agent.model.cuda_kernels import ring_decode_attention
            return ring_decode_attention(q, self.k, self.v, self.k_scale, self.v_scale, *visibility.window)
        k = dequantize_rows(self.k, self.k_scale, q.dtype)
        v = dequantize_rows(self.v, self.v_scale, q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visibility.mask)


def make_kv_cache(kv_dtype: KVDtype, batch_size: int, num_heads: int, capacity: int, head_dim: int,
                  device, dtype) -> KVCache | Fp8KVCache:
    if kv_dtype == "fp8":
        return Fp8KVCache(batch_size, num_heads, capacity, head_dim, device)
    if kv_dtype == "bf16":
        return KVCache(batch_size, num_heads, capacity, head_dim, device, dtype)
    raise ValueError(f"unknown KV cache dtype {kv_dtype!r} (use one of {', '.join(KV_DTYPES)})")
