"""The ring decode kernels of `agent.model.cuda_kernels` on the CPU, under Triton's interpreter,
against the reference attention of `agent.model.kv_cache`, at tiny shapes:
`PYTHONPATH=.:/path/to/triton TRITON_INTERPRET=1 python3 scripts/check_kernels_interpreted.py`.

Triton's interpreter runs the kernels' code on CPU tensors with numpy, so the arithmetic and
indexing of every configuration the engine dispatches (FP8 and the model's dtype, window and
pinned rings, one split and several, more splits than blocks) are checked without a GPU; their
speed, and what the compiler makes of them, are not (scripts/bench_decode_kernels.py, on a GPU).
Prints one line per case and exits 1 if any misses its bound. Not part of CI (no Triton there).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import torch
import torch.nn.functional as F
from decode_rings import pinned_ring, random_ring, random_turn

from agent.model.cuda_kernels import decode_splits, ring_decode_attention
from agent.model.fp8 import dequantize_rows, quantize_rows
from agent.model.kv_cache import Fp8KVCache, KVCache, Visibility, attend_pinned, decode_step
from agent.model.rope import apply_rope

BOUND = {torch.float32: 1e-5, torch.bfloat16: 1e-2}  # relative error against the float32 reference
SPLITS = (1, 2, 3, 8)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def ring(kind: str, B: int, H: int, S: int, D: int, dtype: torch.dtype, generator: torch.Generator):
    """A filled ring of `kind` (fp8 or the model's dtype), its float32 keys and values as stored, its scales."""
    k, v = (torch.randn(B, H, S, D, generator=generator) * 2 for _ in range(2))
    cache = Fp8KVCache(B, H, S, D, "cpu") if kind == "fp8" else KVCache(B, H, S, D, "cpu", dtype)
    cache.write(torch.arange(S).expand(B, S), k.to(dtype), v.to(dtype))
    if kind == "fp8":
        stored = dequantize_rows(cache.k, cache.k_scale, torch.float32), dequantize_rows(cache.v, cache.v_scale,
                                                                                          torch.float32)
        return cache, stored, (cache.k_scale, cache.v_scale)
    return cache, (cache.k.float(), cache.v.float()), None


def cases():
    """(name, kernel output, reference, dtype) of every configuration."""
    generator = torch.Generator().manual_seed(0)
    for kind in ("fp8", "bf16"):
        for dtype in (torch.float32, torch.bfloat16):
            for B, H, S, D, context, block_s in ((3, 2, 40, 16, 40, 16), (4, 2, 37, 16, 20, 8),
                                                 (5, 3, 100, 32, 100, 16), (3, 2, 24, 12, 24, 8)):
                cache, (k, v), scales = ring(kind, B, H, S, D, dtype, generator)
                q = (torch.randn(B, H, 1, D, generator=generator) * 2).to(dtype)
                positions, key_positions = random_ring(B, S, generator)
                window = Visibility(positions[:, None], key_positions, S, context)
                reference = F.scaled_dot_product_attention(q.float(), k, v, attn_mask=window.mask)
                ring_name = "fp8" if kind == "fp8" else "unquantised"  # in the queries' dtype
                shape = f"{ring_name} ring, {str(dtype)[6:]} B{B} H{H} S{S} D{D} ctx {context} block {block_s}"
                for splits in SPLITS:
                    out = ring_decode_attention(q, cache.k, cache.v, *(scales or (None, None)), *window.window,
                                                block_s=block_s, splits=splits)
                    yield f"window {shape} splits {splits}", out, reference, dtype
                if kind == "fp8":  # the window ring's step as the engine dispatches it on CUDA
                    yield f"window {shape} decode_step", decode_step(q, None, cache.k, cache.v, scales, window), \
                        reference, dtype
                pinned = pinned_ring(B, S, generator)
                turn = random_turn(B, D, generator)
                reference = attend_pinned(q.float(), apply_rope(q.float(), *turn), k, v, pinned)
                for splits in SPLITS:
                    out = ring_decode_attention(q, cache.k, cache.v, *(scales or (None, None)), *pinned.window,
                                                block_s=block_s,
                                                pinned=(*(t.reshape(B, -1) for t in turn), pinned.pinned_counts),
                                                splits=splits)
                    yield f"pinned {shape} splits {splits}", out, reference, dtype
                yield f"pinned {shape} decode_step", decode_step(q, turn, cache.k, cache.v, scales, pinned), \
                    reference, dtype


def dequantize_failures() -> list[str]:
    """The fused FP8 dequantisation (a prefill's read of the ring) against the eager one: float32 bit for
    bit; bfloat16 within one unit in the last place, since the interpreter truncates float32 to bfloat16
    where the GPU rounds to nearest even (tests/agent/model/test_cuda_kernels.py checks every bit there)."""
    generator = torch.Generator().manual_seed(1)
    failed = []
    for shape in ((2, 3, 37, 16), (1, 2, 5, 12), (4, 100)):
        x = torch.randn(shape, generator=generator) * torch.logspace(-3, 3, shape[-2])[:, None]
        values, scales = quantize_rows(x)
        for dtype, ulp in ((torch.float32, 0.0), (torch.bfloat16, 2 ** -7)):
            fused, eager = (dequantize_rows(values, scales, dtype, fused=f).float() for f in (True, False))
            if not ((fused - eager).abs() <= eager.abs() * ulp).all():
                failed.append(f"dequantize_rows fused {tuple(shape)} {dtype}")
    return failed


def split_rule_failures() -> list[str]:
    """The split count at the engine's shapes on an H200 (132 multiprocessors, 3000 slots, blocks of 128)."""
    expected = {80 * 32: 1, 32 * 32: 2, 8 * 32: 5, 32: 5, 1: 5}
    got = {programs: decode_splits(programs, 3000, 128, 132) for programs in expected}
    return [f"decode_splits({programs}, 3000, 128, 132) = {got[programs]}, expected {n}"
            for programs, n in expected.items() if got[programs] != n]


def main() -> int:
    failed = split_rule_failures() + dequantize_failures()
    worst: dict[torch.dtype, float] = {}
    count = 0
    for name, out, reference, dtype in cases():
        count += 1
        error = relative_error(out, reference)
        ok = out.dtype == dtype and out.shape == reference.shape and error < BOUND[dtype]  # NaN fails too
        worst[dtype] = max(worst.get(dtype, 0.0), error)
        print(f"{'ok  ' if ok else 'FAIL'} {name:<78} err {error:.2e}")
        if not ok:
            failed.append(name)
    for dtype, error in worst.items():
        print(f"{str(dtype)[6:]} queries: worst relative error {error:.2e} (bound {BOUND[dtype]:.0e})")
    print("\n".join(failed) or f"all {count} cases within their bounds; the fused dequantisation is the eager one")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
