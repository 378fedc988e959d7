"""Triton kernels of the CUDA path: attention of one step over a KV ring (FP8 or the model's dtype),
and FP8 rows, quantised and dequantised.

Imported only where a CUDA tensor needs them (Triton comes with CUDA builds of torch); the CPU
path and the tests' reference are `agent.model.kv_cache` and `agent.model.fp8` in plain PyTorch
(scripts/check_kernels_interpreted.py runs these kernels on the CPU under Triton's interpreter
against that reference). The kernels are memory-bound: each reads its input once, 16-byte loads
along the contiguous head (or feature) dimension, and launches with static shapes, so they are
captured in CUDA graphs.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
FP8_MAX = tl.constexpr(448.0)
TINY = tl.constexpr(1.1754943508222875e-38)  # float32's smallest normal: the scale of an all-zero row
PROGRAMS_PER_MULTIPROCESSOR = 8  # split rows until the grid has this many programs per multiprocessor...
MIN_BLOCKS_PER_SPLIT = 4  # ...but never into pieces of fewer blocks of slots than this
MAX_SPLITS = 16
# The decode kernel's block of slots and warps per program when a call names none, by ring: the
# fastest of the shapes scripts/bench_decode_kernels.py tried on an H200 at 80 calls and 3000 slots
# (Triton 3.6, 2026-12-03): one warp a program, small blocks, many programs in flight. FP8 ring
# 16 slots: 0.50 ms a layer, 97% of the copy bandwidth (128 slots and 4 warps: 0.62 ms); bf16 ring
# 32 slots: 0.90 ms, as PyTorch's attention (128 and 4: 1.20 ms).
BLOCK_S = {True: 16, False: 32}  # by whether the ring is FP8 (scaled)
NUM_WARPS = 1


@triton.jit
def _attend_blocks(q, m, total, acc, lo, hi, lowest, highest, bh, b, S, k_ptr, v_ptr, k_scale_ptr, v_scale_ptr,
                   key_positions_ptr, qk_scale, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
                   SCALED: tl.constexpr, PINNED: tl.constexpr):
    """The online softmax (running max m, sum of exponentials total, unnormalised output acc [BLOCK_D])
    carried over the ring slots lo..hi-1 of (row, head) bh, BLOCK_S at a time, scored with q.

    PINNED: the slots hold the row's pinned prompt, seen whatever the window (every one the query
    follows); else the window lowest..highest decides.
    """
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    for start in range(lo, hi, BLOCK_S):
        s = start + tl.arange(0, BLOCK_S)
        s_ok = s < hi
        offsets = (bh * S + s)[:, None] * D + d[None, :]
        inside = s_ok[:, None] & d_ok[None, :]
        # Every load of the block before the first reduction: its barriers would otherwise hold the
        # later loads back until the scores are done, several waits on memory per block instead of one.
        key_position = tl.load(key_positions_ptr + b * S + s, mask=s_ok, other=-1)
        k = tl.load(k_ptr + offsets, mask=inside, other=0.0)
        v = tl.load(v_ptr + offsets, mask=inside, other=0.0)
        if SCALED:
            k_scale = tl.load(k_scale_ptr + bh * S + s, mask=s_ok, other=0.0)
            v_scale = tl.load(v_scale_ptr + bh * S + s, mask=s_ok, other=0.0)
        if PINNED:
            seen = s_ok & (key_position >= 0) & (key_position <= highest)
        else:
            seen = s_ok & (key_position >= lowest) & (key_position <= highest)
        scores = tl.sum(k.to(tl.float32) * q[None, :], axis=1)
        if SCALED:
            scores = scores * k_scale
        scores = tl.where(seen, scores * qk_scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new)
        total = total * alpha + tl.sum(p, axis=0)
        if SCALED:
            p = p * v_scale
        acc = acc * alpha + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
        m = m_new
    return m, total, acc


@triton.jit
def _ring_decode(q_ptr, cos_ptr, sin_ptr, k_ptr, v_ptr, k_scale_ptr, v_scale_ptr, key_positions_ptr, lowest_ptr,
                 highest_ptr, pinned_ptr, out_ptr, part_ptr, top_ptr, total_ptr, S, split_slots, qk_scale,
                 H: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
                 SPLITS: tl.constexpr, SCALED: tl.constexpr, HAS_PINNED: tl.constexpr):
    """One program per (row, head, split): an online softmax over the split's ring slots, in float32
    (the scores in log2 units).

    SPLITS == 1: the program normalises and writes the output. Else each split leaves its running
    maximum, its sum of exponentials and its unnormalised output for `_merge_splits`.
    SCALED: an FP8 ring, each slot's key and value times its float32 scale.
    HAS_PINNED: the row's slots below pinned[b] are always seen and scored with its query turned
    by the row's angles (cos, sin [B, D/2]: RoPE's interleaved pairs), in the same softmax: the
    split's slots below pinned[b] first, with the turned query, then the rest with the step's, each
    slot read once and scored once.
    (Both products on the tensor cores, the query padded to 16 columns, ran 1.4 to 2 times slower
    on an H200: one query per head leaves them idle, and the loads are what count.)
    """
    bh = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    b = bh // H
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    q = tl.load(q_ptr + bh * D + d, mask=d_ok, other=0.0).to(tl.float32)
    lowest = tl.load(lowest_ptr + b)
    highest = tl.load(highest_ptr + b)
    m = tl.max(tl.full([BLOCK_S], -1e30, tl.float32), axis=0)  # running max (finite: no inf - inf)
    total = tl.sum(tl.zeros([BLOCK_S], tl.float32), axis=0)
    acc = tl.zeros([BLOCK_D], tl.float32)
    first = split * split_slots
    last = tl.minimum(first + split_slots, S)
    if HAS_PINNED:
        pair = d // 2  # the query's pair (d & ~1, d | 1) turns by angle `pair`
        cos = tl.load(cos_ptr + b * (D // 2) + pair, mask=d_ok, other=1.0)
        sin = tl.load(sin_ptr + b * (D // 2) + pair, mask=d_ok, other=0.0)
        other = tl.load(q_ptr + bh * D + (d ^ 1), mask=d_ok, other=0.0).to(tl.float32)  # the pair's other half
        q_pinned = tl.where(d % 2 == 0, q * cos - other * sin, other * sin + q * cos)
        pinned = tl.minimum(tl.maximum(tl.load(pinned_ptr + b), first), last)  # this split's share of them
        m, total, acc = _attend_blocks(q_pinned, m, total, acc, first, pinned, lowest, highest, bh, b, S, k_ptr,
                                       v_ptr, k_scale_ptr, v_scale_ptr, key_positions_ptr, qk_scale, D, BLOCK_D,
                                       BLOCK_S, SCALED, True)
        first = pinned
    m, total, acc = _attend_blocks(q, m, total, acc, first, last, lowest, highest, bh, b, S, k_ptr, v_ptr,
                                   k_scale_ptr, v_scale_ptr, key_positions_ptr, qk_scale, D, BLOCK_D, BLOCK_S,
                                   SCALED, False)
    if SPLITS == 1:
        tl.store(out_ptr + bh * D + d, (acc / total).to(out_ptr.dtype.element_ty), mask=d_ok)
    else:
        part = bh * SPLITS + split
        tl.store(part_ptr + part * D + d, acc, mask=d_ok)
        tl.store(top_ptr + part, m)
        tl.store(total_ptr + part, total)


@triton.jit
def _merge_splits(part_ptr, top_ptr, total_ptr, out_ptr, D: tl.constexpr, BLOCK_D: tl.constexpr,
                  SPLITS: tl.constexpr, BLOCK_SPLITS: tl.constexpr):
    """One program per (row, head): the splits' partial softmaxes as one, each weighted by
    2^(its maximum - the largest); a split that saw no slot has weight 0."""
    bh = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK_SPLITS)
    i_ok = i < SPLITS
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    top = tl.load(top_ptr + bh * SPLITS + i, mask=i_ok, other=-1e30)
    weight = tl.where(i_ok, tl.exp2(top - tl.max(top, axis=0)), 0.0)
    total = tl.sum(weight * tl.load(total_ptr + bh * SPLITS + i, mask=i_ok, other=0.0), axis=0)
    parts = tl.load(part_ptr + (bh * SPLITS + i)[:, None] * D + d[None, :], mask=i_ok[:, None] & d_ok[None, :],
                    other=0.0)
    out = tl.sum(weight[:, None] * parts, axis=0) / total
    tl.store(out_ptr + bh * D + d, out.to(out_ptr.dtype.element_ty), mask=d_ok)


def decode_splits(programs: int, slots: int, block_s: int, multiprocessors: int) -> int:
    """How many pieces each (row, head)'s ring is cut into (flash-decoding's split-K): enough for
    PROGRAMS_PER_MULTIPROCESSOR programs on every multiprocessor when rows x heads alone are too
    few (a handful of calls), none shorter than MIN_BLOCKS_PER_SPLIT blocks, at most MAX_SPLITS."""
    wanted = -(-PROGRAMS_PER_MULTIPROCESSOR * multiprocessors // programs)
    longest = max(1, slots // (MIN_BLOCKS_PER_SPLIT * block_s))
    return max(1, min(wanted, longest, MAX_SPLITS))


@cache
def multiprocessors(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def ring_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_scale: torch.Tensor | None,
                          v_scale: torch.Tensor | None, lowest: torch.Tensor, highest: torch.Tensor,
                          key_positions: torch.Tensor, block_s: int | None = None, num_warps: int | None = None,
                          num_stages: int = 2, pinned: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                          splits: int | None = None) -> torch.Tensor:
    """Softmax attention of q [B, H, 1, D] over the ring k, v [B, H, S, D] -> [B, H, 1, D].

    k_scale, v_scale [B, H, S] float32 are an FP8 ring's scales (None: a ring in q's dtype, read as
    stored). Row b sees the slots whose position (key_positions [B, S] int32) lies in
    lowest[b]..highest[b] (int32 [B]). `pinned`, the cos and sin [B, D/2] float32 of a turn of
    each row's query and counts [B] int32, adds row b's slots 0..count-1, scored with the query
    turned (`agent.model.kv_cache.Turn`) in the same softmax (`agent.model.kv_cache.Visibility.pinned`).
    `splits` cuts each ring into that many pieces read by programs of their own and merged by a
    second, small kernel (None: `decode_splits`; the CPU, under Triton's interpreter, has no
    multiprocessors to fill and takes 1). block_s and num_warps default to BLOCK_S (of the ring's
    kind) and NUM_WARPS.
    """
    B, H, T, D = q.shape
    if T != 1:
        raise ValueError(f"the ring decode kernel takes one query per row, got {T}")
    S = k.shape[2]
    scaled = k_scale is not None
    block_s = min(block_s or BLOCK_S[scaled], triton.next_power_of_2(S))
    num_warps = num_warps or NUM_WARPS
    if splits is None:
        splits = decode_splits(B * H, S, block_s, multiprocessors(q.device)) if q.is_cuda else 1
    split_slots = -(-S // splits // block_s) * block_s  # whole blocks per split (the last may have fewer)
    q = q.contiguous()
    out = torch.empty_like(q)
    # Tensors a configuration does not read (no pinned slots, no scales, one split): any of the right kind.
    cos, sin, counts = (q, q, lowest) if pinned is None else (*(t.float().contiguous() for t in pinned[:2]), pinned[2])
    k_scale, v_scale = (k_scale, v_scale) if scaled else (q, q)
    part, top, total = out, lowest, lowest
    if splits > 1:
        part = torch.empty(B * H * splits, D, dtype=torch.float32, device=q.device)
        top, total = torch.empty(2, B * H * splits, dtype=torch.float32, device=q.device)
    block_d = triton.next_power_of_2(D)
    _ring_decode[(B * H, splits)](q, cos, sin, k, v, k_scale, v_scale, key_positions, lowest, highest, counts, out,
                                  part, top, total, S, split_slots, LOG2E / math.sqrt(D), H=H, D=D, BLOCK_D=block_d,
                                  BLOCK_S=block_s, SPLITS=splits, SCALED=scaled, HAS_PINNED=pinned is not None,
                                  num_warps=num_warps, num_stages=num_stages)
    if splits > 1:
        _merge_splits[(B * H,)](part, top, total, out, D=D, BLOCK_D=block_d, SPLITS=splits,
                                BLOCK_SPLITS=triton.next_power_of_2(splits), num_warps=4)
    return out


@triton.jit
def _quantize_rows(x_ptr, values_ptr, scales_ptr, K, BLOCK: tl.constexpr):
    """One program per row: its absolute maximum, then the row over amax / 448 in e4m3."""
    row = tl.program_id(0).to(tl.int64)
    amax = tl.max(tl.zeros([BLOCK], tl.float32), axis=0)
    for start in range(0, K, BLOCK):
        k = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * K + k, mask=k < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.max(tl.abs(x), axis=0))
    scale = tl.maximum(amax / FP8_MAX, TINY)
    tl.store(scales_ptr + row, scale)
    for start in range(0, K, BLOCK):
        k = start + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * K + k, mask=k < K, other=0.0).to(tl.float32)
        y = tl.minimum(tl.maximum(x / scale, -FP8_MAX), FP8_MAX)
        tl.store(values_ptr + row * K + k, y.to(values_ptr.dtype.element_ty), mask=k < K)


def quantize_rows_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> e4m3 values [M, K] and float32 scales [M, 1]: `agent.model.kv_cache.quantize_rows`
    in one kernel (the scales shaped as `torch._scaled_mm` takes them)."""
    x = x.contiguous()
    M, K = x.shape
    values = torch.empty((M, K), dtype=torch.float8_e4m3fn, device=x.device)
    scales = torch.empty((M, 1), dtype=torch.float32, device=x.device)
    _quantize_rows[(M,)](x, values, scales, K, BLOCK=min(2048, triton.next_power_of_2(K)), num_warps=4)
    return values, scales


@triton.jit
def _dequantize_rows(values_ptr, scales_ptr, out_ptr, M, D: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                     BLOCK_D: tl.constexpr):
    """BLOCK_ROWS rows a program: each value in float32 times its row's scale, rounded to the output's dtype."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    d = tl.arange(0, BLOCK_D)
    inside = (rows < M)[:, None] & (d < D)[None, :]
    at = rows[:, None] * D + d[None, :]
    scale = tl.load(scales_ptr + rows, mask=rows < M, other=0.0)
    x = tl.load(values_ptr + at, mask=inside, other=0.0).to(tl.float32) * scale[:, None]
    tl.store(out_ptr + at, x.to(out_ptr.dtype.element_ty), mask=inside)


def dequantize_rows_fp8(values: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """e4m3 values [..., D] and float32 scales [...] -> [..., D] in `dtype`: `agent.model.fp8.dequantize_rows`
    (the same float32 product, rounded once) in one pass, where the eager form makes and reads a float32
    copy: a prefill reads the whole FP8 ring of every layer this way."""
    D = values.shape[-1]
    out = torch.empty(values.shape, dtype=dtype, device=values.device)
    M = values.numel() // D
    block_rows = 32
    _dequantize_rows[(triton.cdiv(M, block_rows),)](values.contiguous(), scales.contiguous(), out, M, D=D,
                                                     BLOCK_ROWS=block_rows, BLOCK_D=triton.next_power_of_2(D),
                                                     num_warps=4)
    return out
