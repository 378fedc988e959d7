"""Decode attention over the KV ring on one GPU, the kernels as they are against the ones they
replaced, in one process: `PYTHONPATH=. python3 scripts/bench_decode_kernels.py OUT.json [SECTIONS] [STEPS]`.

1. kernel: one layer's attention of one step at full context (3000 slots, 32 heads of 128) for
   1 to 160 calls, window rings and rings that pin a 200-frame prompt: `ring_decode_attention` with
   its split rule, with each split count forced, and with other block shapes; for bf16 rings beside
   PyTorch's attention (what the window ring runs) and, pinned, the cuDNN pass over both queries
   merged by log-sum-exp (what a pinned step ran before the one-pass kernel). The first version of
   the FP8 kernel (one program per row and head, 128-slot blocks, 4 warps) is in
   bench/decode-kernels-h200.json, the run that replaced it. Each variant is a CUDA graph of 32 launches
   over distinct copies of the ring (as 32 layers: little of it stays in L2); it reports
   milliseconds per launch, TB/s of the ring's bytes against the measured copy bandwidth, and the
   relative error against float32 attention over the ring as stored.
2. engine: frame p50/p99 and the LM step (one CUDA graph) at 80 calls on full-size dummy weights,
   bf16 (window ring; pinned personas with the merged cuDNN pass and with the kernel) and FP8
   weights with the FP8 ring (window and pinned), and FP8 weights in the temporal transformer
   alone (the depth transformer's in bf16) with the FP8 ring.
Sections: kernel,engine (both by default); STEPS timed steps per engine row (default 60).
The JSON is rewritten after each section; the table is printed last.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

import torch
import torch.nn.functional as F

from agent.engine.backend import CallSetup
from agent.model import cuda_kernels, kv_cache
from agent.model.cuda_kernels import decode_splits, multiprocessors, ring_decode_attention
from agent.model.kv_cache import Fp8KVCache, Visibility, attend_pinned, attend_pinned_directly
from agent.model.loading import load_models
from agent.model.rope import apply_rope
from bench.engine import bench_prompt, copy_bandwidth, percentile, run_batch

HEADS, SLOTS, HEAD_DIM = 32, 3000, 128
PINNED = 200  # frames of a pinned persona prompt
LAUNCHES = 32  # per timed graph, as the LM's 32 layers
RING_COPIES_BYTES = 1 << 30  # at least this much ring memory per graph, so that L2 holds little of it
BATCHES = {"fp8": (1, 8, 32, 80, 160), "bf16": (1, 8, 32, 80)}
SHAPE_BATCHES = (1, 80)  # batches at which every block shape is timed
SHAPES = ((128, 4), (64, 4), (32, 4), (64, 8), (32, 2), (32, 1), (16, 1), (16, 2), (8, 1))  # (block_s, num_warps)
FORCED_SPLITS = (1, 2, 4, 8)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def full_rings(B: int, pinned: bool, generator: torch.Generator) -> Visibility:
    """One query per row of rows far past the wrap: every slot holds a visible key (the oldest hidden),
    slots 0..PINNED-1 the pinned prompt where `pinned`. The visibility's cached tensors are made
    here, outside the timed graphs (the engine makes them once per step for all layers)."""
    positions = torch.randint(4 * SLOTS, 8 * SLOTS, (B,), generator=generator)[:, None]
    slots = torch.arange(SLOTS)
    count = PINNED if pinned else 0
    conversation = positions - (positions - slots) % (SLOTS - count)  # the latest step written at each slot
    key_positions = torch.where(slots < count, slots, conversation)
    visibility = Visibility(positions.cuda(), key_positions.cuda(), SLOTS, SLOTS,
                            torch.full((B,), count).cuda() if pinned else None)
    for made in ("mask", "pinned_mask", "window") + (("pinned_counts",) if pinned else ()):
        getattr(visibility, made)
    return visibility


def ring_tensors(kind: str, B: int, generator: torch.Generator) -> tuple[tuple[torch.Tensor, ...], tuple]:
    """(k, v, k_scale, v_scale) of an FP8 ring or (k, v) of a bf16 one, and its k, v as stored in float32."""
    k, v = (torch.randn(B, HEADS, SLOTS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=generator) * 2
            for _ in range(2))
    if kind == "bf16":
        return (k, v), (k.float(), v.float())
    cache = Fp8KVCache(B, HEADS, SLOTS, HEAD_DIM, "cuda")
    cache.write(torch.arange(SLOTS, device="cuda").expand(B, SLOTS), k, v)
    del k, v
    stored = tuple(values.float() * scale[..., None] for values, scale in ((cache.k, cache.k_scale),
                                                                            (cache.v, cache.v_scale)))
    return cache.tensors, stored


def graph_ms(launch, copies: list[tuple[torch.Tensor, ...]], repeats: int = 20) -> float:
    """Milliseconds per launch of a CUDA graph of LAUNCHES launches cycling over the ring copies."""
    for ring in copies:
        launch(ring)  # compiles outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(LAUNCHES):
            launch(copies[i % len(copies)])
    times = []
    for i in range(repeats + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) / LAUNCHES)
    del graph
    return percentile(times, 0.5)


def variants(kind: str, pinned: bool, B: int) -> list[tuple[str, dict, object]]:
    """(name, its settings, launch(q, turn, ring, visibility)) of each way to attend this case."""
    def kernel(**options):
        def launch(q, turn, ring, visibility):
            scales = ring[2:] if kind == "fp8" else (None, None)
            turned = (*(t.reshape(q.shape[0], -1) for t in turn), visibility.pinned_counts)
            return ring_decode_attention(q, *ring[:2], *scales, *visibility.window,
                                         pinned=turned if pinned else None, **options)
        return launch

    block_s, num_warps = cuda_kernels.BLOCK_S[kind == "fp8"], cuda_kernels.NUM_WARPS
    rule = decode_splits(B * HEADS, SLOTS, block_s, multiprocessors(torch.device("cuda")))
    found = []
    if kind == "bf16" and pinned:
        found.append(("before: cuDNN over both queries, LSE merge", {"path": "cudnn-merged"},
                      lambda q, turn, ring, visibility: attend_pinned(q, apply_rope(q, *turn), *ring, visibility)))
    elif kind == "bf16":
        found.append(("PyTorch attention (the engine's)", {"path": "sdpa"},
                      lambda q, turn, ring, visibility: F.scaled_dot_product_attention(
                          q, *ring, attn_mask=visibility.mask)))
    found.append((f"kernel, split rule ({rule})", {"path": "kernel", "splits": rule, "block_s": block_s,
                                                   "num_warps": num_warps}, kernel()))
    for splits in FORCED_SPLITS:
        if splits != rule:
            found.append((f"kernel, splits {splits}", {"path": "kernel", "splits": splits,
                                                       "block_s": block_s,
                                                       "num_warps": num_warps}, kernel(splits=splits)))
    if B in SHAPE_BATCHES:
        for shape_s, shape_warps in SHAPES:
            if (shape_s, shape_warps) != (block_s, num_warps):
                splits = decode_splits(B * HEADS, SLOTS, shape_s, multiprocessors(torch.device("cuda")))
                found.append((f"kernel, block {shape_s} warps {shape_warps}, splits {splits}",
                              {"path": "kernel", "splits": splits, "block_s": shape_s, "num_warps": shape_warps},
                              kernel(block_s=shape_s, num_warps=shape_warps)))
    return found


def kernel_rows(bandwidth: float) -> list[dict]:
    generator = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for kind, batches in BATCHES.items():
        for B in batches:
            ring, stored = ring_tensors(kind, B, generator)
            nbytes = sum(t.numel() * t.element_size() for t in ring) + B * SLOTS * 4  # and the key positions
            copies = [ring] + [tuple(t.clone() for t in ring)
                               for _ in range(min(LAUNCHES, math.ceil(RING_COPIES_BYTES / nbytes)) - 1)]
            q = torch.randn(B, HEADS, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=generator) * 2
            angles = torch.rand(B, 1, 1, HEAD_DIM // 2, device="cuda", generator=generator) * 2000 - 1000
            turn = torch.cos(angles), torch.sin(angles)
            for pinned in (False, True):
                visibility = full_rings(B, pinned, torch.Generator().manual_seed(B))
                if pinned:
                    reference = attend_pinned_directly(q.float(), apply_rope(q.float(), *turn), *stored, visibility)
                else:
                    reference = F.scaled_dot_product_attention(q.float(), *stored, attn_mask=visibility.mask)
                for name, settings, launch in variants(kind, pinned, B):
                    def run(ring, launch=launch, q=q, turn=turn, visibility=visibility):
                        return launch(q, turn, ring, visibility)
                    error = relative_error(run(ring), reference)
                    ms = graph_ms(run, copies)
                    row = dict(kv=kind, ring="pinned" if pinned else "window", calls=B, variant=name, ms=ms,
                               tbs=nbytes / ms / 1e9, of_copy=nbytes / ms / 1e-3 / bandwidth, error=error, **settings)
                    rows.append(row)
                    print(kernel_line(row), flush=True)
            del ring, stored, copies
            torch.cuda.empty_cache()
    return rows


def kernel_line(r: dict) -> str:
    error = "" if r["error"] is None else f"err {r['error']:.1e}"
    return (f"{r['kv']:>4} {r['ring']:<6} {r['calls']:>3} calls | {r['variant']:<46} | {r['ms']:8.4f} ms | "
            f"{r['tbs']:5.2f} TB/s | {r['of_copy']:5.1%} of copy | {error}")


def previous_decode_step(q, turn, k, v, scales, visibility):
    """A bf16 ring that pins as its decode ran before the one-pass kernel: the merged cuDNN pass."""
    return attend_pinned(q, apply_rope(q, *turn), k, v, visibility)


@contextmanager
def kernels(which: str, shape: tuple[int, int] | None = None):
    """`before`: the merged cuDNN pass in the ring's dispatch; `after`: the kernel, with a block shape."""
    if which == "before":
        with patch.object(kv_cache, "decode_step", previous_decode_step):
            yield
        return
    with patch.multiple(cuda_kernels, BLOCK_S={True: shape[0], False: shape[0]}, NUM_WARPS=shape[1]) if shape else nullcontext():
        yield


def engine_rows(steps: int, best_shape: tuple[int, int] | None) -> list[dict]:
    """Frame and LM step at 80 calls for each precision, way of keeping the persona and kernel set."""
    plans = {"bf16": [("window", False, "window", "unchanged"), ("pinned", True, "pinned", "before"),
                      ("pinned", True, "pinned", "after")],
             "fp8": [("window", False, "window", "after"), ("pinned", True, "pinned", "after")]}
    if best_shape and best_shape != (cuda_kernels.BLOCK_S[True], cuda_kernels.NUM_WARPS):
        plans["fp8"] += [("window", False, "window", "after, best shape"),
                         ("pinned", True, "pinned", "after, best shape")]
    # FP8 weights in the temporal transformer alone: the depth transformer's small products gain less
    # from FP8 bytes than its activations' quantisation kernels cost (a question for the GPU).
    plans["fp8 temporal"] = [("window", False, "window", "after")]
    rows = []
    for precision in ("bf16", "fp8", "fp8 temporal"):
        models = load_models("dummy:full", "cuda", weights="bf16" if precision == "fp8 temporal" else precision)
        if precision == "fp8 temporal":
            models.lm.transformer.to_fp8_weights()
        call = CallSetup(prompt=bench_prompt(models), seed=7)
        for setting, pin_personas, keep_persona, which in plans[precision]:
            torch.cuda.empty_cache()
            shape = best_shape if which.endswith("best shape") else None
            try:
                with kernels("before" if which == "before" else "after", shape):
                    frame, parts = run_batch(models, 80, steps, 20, replace(call, keep_persona=keep_persona),
                                             "bf16" if precision == "bf16" else "fp8", pin_personas=pin_personas)
                row = dict(precision=precision, setting=setting, kernels=which, shape=shape,
                           p50_ms=percentile(frame, 0.5), p99_ms=percentile(frame, 0.99), lm_ms=parts["lm_ms"])
            except torch.OutOfMemoryError:
                row = dict(precision=precision, setting=setting, kernels=which, shape=shape, error="out of memory")
            rows.append(row)
            print(engine_line(row), flush=True)
        del models
        torch.cuda.empty_cache()
    return rows


def engine_line(r: dict) -> str:
    name = f"{r['precision']:>12} weights+KV, {r['setting']:<6}, {r['kernels']:<17}"
    if "error" in r:
        return f"{name} | {r['error']}"
    return f"{name} | frame p50 {r['p50_ms']:6.2f} ms p99 {r['p99_ms']:6.2f} ms | LM {r['lm_ms']:6.2f} ms"


def best_fp8_shape(rows: list[dict]) -> tuple[int, int] | None:
    """The block shape of the fastest kernel variant for the FP8 window ring at 80 calls."""
    kernel = [r for r in rows if r["kv"] == "fp8" and r["ring"] == "window" and r["calls"] == 80
              and r["path"] == "kernel"]
    best = min(kernel, key=lambda r: r["ms"], default=None)
    return None if best is None else (best["block_s"], best["num_warps"])


def table(result: dict) -> str:
    lines = [f"{result['device']}, copy bandwidth {result['copy_tbs']:.2f} TB/s, {result['multiprocessors']} SMs"]
    lines += [kernel_line(r) for r in result.get("kernel", [])]
    for precision in ("bf16", "fp8", "fp8 temporal"):
        rows = [r for r in result.get("engine", []) if r["precision"] == precision and "error" not in r]
        lines += [engine_line(r) for r in rows]
        windows = {r["kernels"]: r for r in rows if r["setting"] == "window"}
        for r in (r for r in rows if r["setting"] == "pinned"):
            window = windows.get(r["kernels"], windows.get("unchanged"))
            if window:
                lines.append(f"{precision} pinned / window ring, kernels {r['kernels']}: frame p50 "
                             f"{r['p50_ms'] / window['p50_ms']:.4f}, LM {r['lm_ms'] / window['lm_ms']:.4f}")
    return "\n".join(lines)


def main(out: Path, sections: set[str], steps: int) -> None:
    device = torch.device("cuda")
    result: dict = {"device": torch.cuda.get_device_name(), "copy_tbs": copy_bandwidth(device) / 1e12,
                    "multiprocessors": multiprocessors(device), "block_s": dict(fp8=cuda_kernels.BLOCK_S[True], bf16=cuda_kernels.BLOCK_S[False]),
                    "num_warps": cuda_kernels.NUM_WARPS}
    if "kernel" in sections:
        result["kernel"] = kernel_rows(result["copy_tbs"] * 1e12)
        out.write_text(json.dumps(result, indent=2) + "\n")
    if "engine" in sections:
        result["best_fp8_shape"] = best_fp8_shape(result.get("kernel", []))
        result["engine"] = engine_rows(steps, result["best_fp8_shape"])
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), set(sys.argv[2].split(",")) if len(sys.argv) > 2 else {"kernel", "engine"},
         int(sys.argv[3]) if len(sys.argv) > 3 else 60)
