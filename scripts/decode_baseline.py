"""The FP8 ring decode kernel as it ran on the H200 on 2026-12-02 (2.85 TB/s at 80 calls, LM step
34.5 ms): one program per (row, head), its loads of values after the scores' reductions, the
pinned slots scored with both queries. Kept only so that scripts/bench_decode_kernels.py times
`agent.model.cuda_kernels` against it in the same process; delete it once that is measured.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _ring_decode(q_ptr, k_ptr, v_ptr, k_scale_ptr, v_scale_ptr, key_positions_ptr, lowest_ptr, highest_ptr,
                 q_pinned_ptr, pinned_ptr, out_ptr, S, qk_scale, H: tl.constexpr, D: tl.constexpr,
                 BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, HAS_PINNED: tl.constexpr):
    """One program per (row, head): an online softmax over the S ring slots, BLOCK_S at a time, in float32.

    (Both products on the tensor cores, the query padded to 16 columns, ran 1.4 to 2 times slower
    on an H200: one query per head leaves them idle, and the loads are what count.)
    HAS_PINNED: the row's slots below pinned[b] are always seen and scored with its second query,
    from the same loads of the keys.
    """
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    q = tl.load(q_ptr + bh * D + d, mask=d_ok, other=0.0).to(tl.float32)
    if HAS_PINNED:
        q_pinned = tl.load(q_pinned_ptr + bh * D + d, mask=d_ok, other=0.0).to(tl.float32)
        pinned = tl.load(pinned_ptr + b)
    else:
        q_pinned = q
        pinned = 0
    lowest = tl.load(lowest_ptr + b)
    highest = tl.load(highest_ptr + b)
    m = tl.max(tl.full([BLOCK_S], -1e30, tl.float32), axis=0)  # running max (finite: no inf - inf)
    total = tl.sum(tl.zeros([BLOCK_S], tl.float32), axis=0)
    acc = tl.zeros([BLOCK_D], tl.float32)
    for start in range(0, S, BLOCK_S):
        s = start + tl.arange(0, BLOCK_S)
        s_ok = s < S
        key_position = tl.load(key_positions_ptr + b * S + s, mask=s_ok, other=-1)
        pinned_slot = s < pinned
        seen = s_ok & (((key_position >= lowest) & (key_position <= highest)) | pinned_slot)
        offsets = (bh * S + s)[:, None] * D + d[None, :]
        inside = s_ok[:, None] & d_ok[None, :]
        k = tl.load(k_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
        scores = tl.sum(k * q[None, :], axis=1)
        if HAS_PINNED:
            scores = tl.where(pinned_slot, tl.sum(k * q_pinned[None, :], axis=1), scores)
        scores = scores * tl.load(k_scale_ptr + bh * S + s, mask=s_ok, other=0.0) * qk_scale  # log2 units
        scores = tl.where(seen, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(scores - m_new)
        total = total * alpha + tl.sum(p, axis=0)
        p = p * tl.load(v_scale_ptr + bh * S + s, mask=s_ok, other=0.0)
        v = tl.load(v_ptr + offsets, mask=inside, other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m = m_new
    tl.store(out_ptr + bh * D + d, (acc / total).to(out_ptr.dtype.element_ty), mask=d_ok)


def ring_decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_scale: torch.Tensor,
                          v_scale: torch.Tensor, lowest: torch.Tensor, highest: torch.Tensor,
                          key_positions: torch.Tensor, block_s: int = 128, num_warps: int = 4,
                          num_stages: int = 2, pinned: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Softmax attention of q [B, H, 1, D] over the FP8 ring k, v [B, H, S, D] -> [B, H, 1, D].

    k_scale, v_scale [B, H, S] float32 are the ring's scales. Row b sees the slots whose position
    (key_positions [B, S] int32) lies in lowest[b]..highest[b] (int32 [B]). `pinned`, a second query
    [B, H, 1, D] and counts [B] int32, adds row b's slots 0..count-1, scored with that query
    (`agent.model.kv_cache.Visibility.pinned`). The default block shape was the fastest of those
    tried on an H200 at 80 calls and 3000 slots (scripts/precision_check.py).
    """
    B, H, T, D = q.shape
    if T != 1:
        raise ValueError(f"the ring decode kernel takes one query per row, got {T}")
    S = k.shape[2]
    q = q.contiguous()
    out = torch.empty_like(q)
    # Without pinned slots the kernel reads neither: any tensors of the right kind stand in.
    q_pinned, counts = (q, lowest) if pinned is None else (pinned[0].contiguous(), pinned[1])
    _ring_decode[(B * H,)](q, k, v, k_scale, v_scale, key_positions, lowest, highest, q_pinned, counts, out, S,
                           LOG2E / math.sqrt(D), H=H, D=D, BLOCK_D=triton.next_power_of_2(D),
                           BLOCK_S=min(block_s, triton.next_power_of_2(S)), num_warps=num_warps,
                           num_stages=num_stages, HAS_PINNED=pinned is not None)
    return out
