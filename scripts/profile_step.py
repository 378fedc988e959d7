"""Where the LM step's time goes (run on a CUDA machine):
`PYTHONPATH=. python3 scripts/profile_step.py [BATCH] [WEIGHTS bf16|fp8] [KV bf16|fp8]`.

Profiles eager steps of the full-size dummy model (kernel times are those of the graph, without
its launch savings) and times attention variants for one layer's KV at that batch.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

import agent.engine.engine as engine_module
import agent.model.stream as stream_module
from agent.engine.backend import CallSetup
from agent.engine.engine import ModelBackend
from agent.model.loading import load_models
from bench.engine import bench_prompt


def time_ms(fn, repeat: int = 50) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeat


def attention_variants(batch: int, heads: int = 32, context: int = 3000, head_dim: int = 128) -> None:
    q = torch.randn(batch, heads, 1, head_dim, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, heads, context, head_dim, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    mask = torch.ones(batch, 1, 1, context, device="cuda", dtype=torch.bool)
    mask[:, :, :, ::7] = False
    bias = torch.zeros(batch, 1, 1, context, device="cuda", dtype=torch.bfloat16).masked_fill(~mask, float("-inf"))
    floor = 2 * k.numel() * 2 / 3.0e12 * 1000

    def manual():
        scores = (q @ k.transpose(-1, -2)) * head_dim ** -0.5
        return scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v

    print(f"attention, one layer, {batch} calls x {context} keys (KV read floor {floor:.3f} ms):")
    for name, fn in [("sdpa bool mask", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)),
                     ("sdpa additive bias", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias)),
                     ("sdpa no mask", lambda: F.scaled_dot_product_attention(q, k, v)),
                     ("matmul softmax matmul", manual)]:
        print(f"  {name:<24} {time_ms(fn):.3f} ms")


def label(obj, name: str, tag: str) -> None:
    """Wrap obj.name so that its kernels are counted under `tag` in the profile."""
    fn = getattr(obj, name)

    def wrapped(*args, **kwargs):
        with record_function(tag):
            return fn(*args, **kwargs)
    setattr(obj, name, wrapped)


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    weights = sys.argv[2] if len(sys.argv) > 2 else "bf16"
    kv_dtype = sys.argv[3] if len(sys.argv) > 3 else "bf16"
    attention_variants(batch)
    models = load_models("dummy:full", "cuda", weights=weights)
    backend = ModelBackend(models.mimi, models.lm, num_slots=batch, cuda_graph=False, kv_dtype=kv_dtype)
    call = CallSetup(prompt=bench_prompt(models), seed=1)
    for slot in range(batch):
        backend.join(slot, call)
    codes = torch.zeros(batch, 8, dtype=torch.long, device="cuda")
    label(models.lm, "temporal", "phase: temporal transformer")
    label(models.lm, "embed", "phase: embeddings")
    label(models.lm, "depformer_step", "phase: depformer transformer")
    label(stream_module, "sample", "phase: sampling")
    label(engine_module, "uniform_noise", "phase: noise")
    label(backend.stream, "_depformer", "phase: depformer with sampling")
    label(backend.stream, "step", "phase: whole LM step")
    with torch.no_grad():
        for _ in range(3):
            backend.generate(codes)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                backend.generate(codes)
            torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if e.key.startswith("phase:")]
    for e in sorted(rows, key=lambda e: -e.device_time_total):
        print(f"{e.key:<36} {e.device_time_total / 5 / 1000:8.2f} ms per step ({e.count // 5} calls)")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=110))


if __name__ == "__main__":
    main()
