"""The KV ring of one attention layer, in the model's dtype or in FP8, and attention over it.

Keys and values are preallocated [B, H, capacity, head_dim]; each row writes its steps at its own
ring slots. `Visibility` says which slots a query may see (each row has its own position and its
own end of ring). A ring in the model's dtype is read by PyTorch's attention under that mask. An
FP8 ring's single steps (T = 1, every streaming step) on CUDA run the ring decode kernel of
`agent.model.cuda_kernels`, which reads the FP8 values and their scales as stored and applies the
visibility per row; everything else (prefill, the CPU) dequantises the ring and runs PyTorch's
attention under the mask: the reference the kernel is tested against. (On an H200 PyTorch's
attention reads a bf16 ring at 4 TB/s, faster than this kernel did before it split the ring.)

A ring may pin a persona prompt (`Visibility.pinned`): its P frames stay in slots 0..P-1 for the
whole call while the conversation slides through slots P..C-1 behind them. The pinned keys stay
rotated at their prefill positions 0..P-1; they are scored with the query rotated at
`Visibility.pinned_positions` instead (RoPE scores depend only on the difference of positions), so
that once the ring is full they sit just before the oldest conversation frame a step sees, at the
distances the model has always seen, and nothing is rotated per step but one query per row. That
query is the step's turned back by the difference of the two positions (a `Turn`: rotations
compose), one (cos, sin) per row for every layer. A step of a ring that pins, in either dtype, runs
the decode kernel on CUDA: one pass over the ring, the step's query turned in registers for the
pinned slots and as it is for the rest, in one softmax.

The FP8 ring stores e4m3 values with one float32 scale per written key (and value) and head
(`agent.model.fp8.quantize_rows`: amax / 448 of that head's vector, so each uses the whole range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F

from agent.model.fp8 import FP8, dequantize_rows, quantize_rows
from agent.model.rope import apply_rope

KVDtype = Literal["bf16", "fp8"]  # bf16: the model's own dtype (float32 on the CPU); fp8: e4m3 with scales
KV_DTYPES: tuple[KVDtype, ...] = ("bf16", "fp8")
SCALE_BYTES = 4  # one float32 scale per head and written key or value
# (cos, sin) [B, 1, T, head_dim/2] of the angles from each query's position to the position it scores
# pinned slots at (`Visibility.pinned_positions`): `agent.model.rope.rope_rotation` of the difference.
Turn = tuple[torch.Tensor, torch.Tensor]


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

    `pinned` [B] (None: a ring that pins nothing) counts the ring slots 0..pinned-1 that hold a
    persona prompt of each row: always seen, scored with a query at `pinned_positions`, while the
    rest of the ring is a ring of capacity - pinned slots under the same rules (`mask`).
    """

    positions: torch.Tensor  # [B, T] long: each query's position
    key_positions: torch.Tensor  # [B, S] long: the position each ring slot holds, -1 if empty
    capacity: int | None  # a ring that hides its oldest slot: its size; else None (no ring, or Kyutai's)
    context: int | None
    pinned: torch.Tensor | None = None  # [B] long: slots 0..pinned-1 hold the row's pinned prompt

    @cached_property
    def pinned_slots(self) -> torch.Tensor:
        """[B, S] bool: the slots that hold a pinned prompt."""
        slots = torch.arange(self.key_positions.shape[1], device=self.key_positions.device)
        if self.pinned is None:
            return torch.zeros_like(self.key_positions, dtype=torch.bool)
        return slots[None, :] < self.pinned[:, None]

    @cached_property
    def mask(self) -> torch.Tensor:
        """[B, 1, T, S] bool, for PyTorch's attention: the slots scored with the query as rotated
        (with pinned slots: the conversation's)."""
        key_positions = self.key_positions[:, None, :]
        delta = self.positions[:, :, None] - key_positions  # [B, T, S]
        mask = (key_positions >= 0) & (delta >= 0)
        if self.capacity is not None:
            end = self.positions[:, -1:, None] + 1  # [B, 1, 1]
            mask &= key_positions > end - self.capacity + self._pinned_count[:, None, None]
        if self.context is not None:
            mask &= delta < self.context
        if self.pinned is not None:
            mask &= ~self.pinned_slots[:, None, :]
        return mask[:, None]

    @cached_property
    def pinned_mask(self) -> torch.Tensor:
        """[B, 1, T, S] bool: the pinned slots each query sees (every one it follows)."""
        key_positions = self.key_positions[:, None, :]
        seen = (key_positions >= 0) & (key_positions <= self.positions[:, :, None])
        return (seen & self.pinned_slots[:, None, :])[:, None]

    @cached_property
    def pinned_positions(self) -> torch.Tensor:
        """[B, T] long: the position at which each query scores the pinned slots, min(p, span - 1).

        A full ring shows a step `span` keys (capacity - 1, the oldest slot hidden; all S without
        that quirk), at distances 0..span-1. Pinned key j (stored at position j) scored from
        span - 1 sits at distance span - 1 - j: just before the oldest conversation key the step
        sees, where the window ring would show the prompt's frames if they were the latest. Before
        the ring is full p < span, so a pinned row attends exactly as the window ring does.
        """
        span = self.capacity - 1 if self.capacity is not None else self.key_positions.shape[1]
        return self.positions.clamp(max=span - 1)

    @cached_property
    def pinned_counts(self) -> torch.Tensor:
        """[B] int32: the pinned slots of each row, as the decode kernel reads them."""
        return self.pinned.int()

    @cached_property
    def _pinned_count(self) -> torch.Tensor:
        return torch.zeros_like(self.positions[:, 0]) if self.pinned is None else self.pinned

    @cached_property
    def window(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For one query per row: the lowest and highest visible key position [B] and the key
        positions [B, S], all int32 (what the decode kernel reads); the same rule as `mask`,
        whose pinned slots the kernel sees apart (`pinned`)."""
        query = self.positions[:, -1]
        lowest = torch.zeros_like(query)
        if self.capacity is not None:
            lowest = torch.maximum(lowest, query + 2 - self.capacity + self._pinned_count)
        if self.context is not None:
            lowest = torch.maximum(lowest, query + 1 - self.context)
        return lowest.int(), query.int(), self.key_positions.int()


def attend_pinned(q: torch.Tensor, q_pinned: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  visibility: Visibility) -> torch.Tensor:
    """One softmax over the ring k, v [B, H, S, D]: the slots of `visibility.mask` scored with q
    [B, H, T, D], the pinned slots with q_pinned (the query rotated at `pinned_positions`).

    On CUDA (a prefill: a step runs `decode_step`) one cuDNN attention (the kernel PyTorch's own
    attention picks for the window ring on Hopper) reads the ring once for both queries (2T query
    rows) and the two halves are merged by their log-sum-exps; elsewhere the scores are computed
    directly.
    """
    if q.is_cuda:
        return _attend_pinned_merged(q, q_pinned, k, v, visibility)
    return attend_pinned_directly(q, q_pinned, k, v, visibility)


def attend_pinned_directly(q: torch.Tensor, q_pinned: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           visibility: Visibility) -> torch.Tensor:
    """`attend_pinned` as its definition, one score per slot and one softmax, on any device: the
    CPU path, and the reference of the fast ones."""
    scores = torch.where(visibility.pinned_slots[:, None, None, :], q_pinned @ k.transpose(-1, -2),
                         q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # [B, H, T, S]
    scores = scores.masked_fill(~(visibility.mask | visibility.pinned_mask), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _attend_pinned_merged(q: torch.Tensor, q_pinned: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          visibility: Visibility) -> torch.Tensor:
    B, H, T, _ = q.shape
    S = k.shape[2]
    # An additive bias of the query's dtype whose rows start 16-element aligned, as PyTorch's own
    # attention prepares a mask for this kernel.
    bias = torch.zeros(B, 1, 2 * T, -(-S // 16) * 16, dtype=q.dtype, device=q.device)[..., :S]
    seen = torch.cat([visibility.mask, visibility.pinned_mask], dim=2)  # [B, 1, 2T, S]
    bias.masked_fill_(~seen, float("-inf"))
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
        torch.cat([q, q_pinned], dim=2), k, v, bias.expand(B, H, 2 * T, S), True)[:2]
    lse = lse.reshape(B, H, -1)[:, :, :2 * T, None].float()  # natural log of each row's softmax denominator
    share = torch.sigmoid(lse[:, :, T:] - lse[:, :, :T])  # the pinned slots' part of the whole softmax
    merged = out[:, :, :T] + share.to(q.dtype) * (out[:, :, T:] - out[:, :, :T])
    has_pinned = visibility.pinned[:, None, None, None] > 0  # a row pinning nothing: its pinned half is empty
    return torch.where(has_pinned, merged, out[:, :, :T])


def decode_step(q: torch.Tensor, turn: Turn | None, k: torch.Tensor, v: torch.Tensor,
                scales: tuple[torch.Tensor, torch.Tensor] | None, visibility: Visibility) -> torch.Tensor:
    """Attention of one query per row q [B, H, 1, D] over a CUDA ring k, v [B, H, S, D] as stored
    (an FP8 ring with its `scales`, else the model's dtype): the decode kernel, one pass, pinned
    slots (`turn` given) in the same softmax, scored with q turned."""
    from agent.model.cuda_kernels import ring_decode_attention
    B = q.shape[0]
    pinned = None if turn is None else (*(t.reshape(B, -1) for t in turn), visibility.pinned_counts)
    return ring_decode_attention(q, k, v, *(scales or (None, None)), *visibility.window, pinned=pinned)


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

    def attend(self, q: torch.Tensor, visibility: Visibility, turn: Turn | None = None) -> torch.Tensor:
        """Attention of q [B, H, T, D] over the ring -> [B, H, T, D]; q turned by `turn` scores the
        pinned slots (given when the visibility pins)."""
        if turn is None:
            return F.scaled_dot_product_attention(q, self.k, self.v, attn_mask=visibility.mask)
        if q.is_cuda and q.shape[2] == 1:  # a streaming step
            return decode_step(q, turn, self.k, self.v, None, visibility)
        return attend_pinned(q, apply_rope(q, *turn), self.k, self.v, visibility)


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

    def attend(self, q: torch.Tensor, visibility: Visibility, turn: Turn | None = None) -> torch.Tensor:
        if q.is_cuda and q.shape[2] == 1:  # a streaming step
            return decode_step(q, turn, self.k, self.v, (self.k_scale, self.v_scale), visibility)
        k = dequantize_rows(self.k, self.k_scale, q.dtype, fused=q.is_cuda)  # a prefill reads the whole ring
        v = dequantize_rows(self.v, self.v_scale, q.dtype, fused=q.is_cuda)
        if turn is not None:
            return attend_pinned(q, apply_rope(q, *turn), k, v, visibility)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visibility.mask)


def make_kv_cache(kv_dtype: KVDtype, batch_size: int, num_heads: int, capacity: int, head_dim: int,
                  device, dtype) -> KVCache | Fp8KVCache:
    if kv_dtype == "fp8":
        return Fp8KVCache(batch_size, num_heads, capacity, head_dim, device)
    if kv_dtype == "bf16":
        return KVCache(batch_size, num_heads, capacity, head_dim, device, dtype)
    raise ValueError(f"unknown KV cache dtype {kv_dtype!r} (use one of {', '.join(KV_DTYPES)})")
