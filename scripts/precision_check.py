"""8-bit KV ring and FP8 weights on a CUDA machine: `PYTHONPATH=. python3 scripts/precision_check.py [OUT.json]`.

1. One full-size layer's attention (80 calls, 3000 slots): PyTorch's over a bf16 ring, the ring
   decode kernel over an FP8 ring in each block shape, with its error against the reference.
2. Error against bf16 on the full-size dummy (4 rows, a 100-frame prompt, 40 steps): text logits
   relative error on the same tokens.
3. The LM step (temporal transformer and the depformer's 8 steps, one CUDA graph) at 80 calls in
   bf16, with the FP8 ring, and with FP8 weights and ring at 80
   and 160 calls, with the GPU memory it took.
4. Error against float32 on the tiny reference: text logits relative error on the same tokens, and
   token agreement when each runs free.
Prints a table last and writes JSON. A second argument picks sections: kernel,model,tiny.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from agent.engine.engine import ModelBackend
from agent.model.checkpoint import load_lm
from agent.model.cuda_kernels import ring_decode_attention
from agent.model.fp8 import dequantize_rows
from agent.model.kv_cache import Fp8KVCache, Visibility
from agent.model.lm import LMConfig
from agent.model.loading import load_models
from agent.model.persona_prompt import prefill_persona
from agent.model.stream import StreamingLM

REFERENCE = Path(__file__).parents[1] / "tests" / "data" / "personaplex-tiny"
PRECISIONS = (("bf16", "bf16"), ("fp8", "bf16"), ("bf16", "fp8"), ("fp8", "fp8"))  # (KV ring, weights)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def median_ms(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def kernel_sweep(B: int = 80, H: int = 32, S: int = 3000, D: int = 128) -> list[dict]:
    """One layer's attention at full context: PyTorch's on a bf16 ring, the kernel's on an FP8 ring."""
    generator = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.bfloat16, generator=generator)
    positions = torch.randint(S, 4 * S, (B,), device="cuda", generator=generator)
    slots = torch.arange(S, device="cuda")
    key_positions = positions[:, None] - (positions[:, None] - slots) % S  # full rings
    visibility = Visibility(positions[:, None], key_positions, S, S)
    k = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, generator=generator)
    v = torch.randn_like(k)
    ms = median_ms(functools.partial(F.scaled_dot_product_attention, q, k, v, attn_mask=visibility.mask))
    rows.append(dict(path="bf16 ring, PyTorch attention", ms=ms, tbs=2 * k.numel() * 2 / ms / 1e9))
    cache = Fp8KVCache(B, H, S, D, "cuda")
    cache.write(slots.expand(B, S), k, v)
    del k, v
    nbytes = sum(t.numel() * t.element_size() for t in cache.tensors)
    reference = F.scaled_dot_product_attention(
        q, *(dequantize_rows(x, scale, torch.bfloat16) for x, scale in ((cache.k, cache.k_scale), (cache.v, cache.v_scale))),
        attn_mask=visibility.mask)
    for block_s, num_warps, num_stages in ((64, 4, 2), (128, 4, 2), (128, 4, 3), (256, 8, 2)):
        run = functools.partial(ring_decode_attention, q, cache.k, cache.v, cache.k_scale, cache.v_scale,
                                *visibility.window, block_s=block_s, num_warps=num_warps, num_stages=num_stages)
        error = relative_error(run(), reference)
        ms = median_ms(run)
        rows.append(dict(path=f"fp8 ring, kernel block {block_s} warps {num_warps} stages {num_stages}", ms=ms,
                         tbs=nbytes / ms / 1e9, error=error))
    del cache
    torch.cuda.empty_cache()
    return rows


def dummy_session(stream: StreamingLM, forced: torch.Tensor | None, steps: int = 40, B: int = 4):
    """Tokens [B, 17, steps] and text logits [B, steps, V] of B rows after a random 100-frame prompt."""
    generator = torch.Generator().manual_seed(0)
    cfg = stream.lm.config
    state = stream.init_state(B)
    frames = torch.randint(0, cfg.card, (B, cfg.num_streams, 100), generator=generator)
    frames[:, 0] = torch.randint(4, cfg.text_card, (B, 100), generator=generator)
    stream.prefill(state, frames.cuda())
    tokens, logits = [], []
    for i in range(steps):
        user = torch.randint(0, cfg.card, (B, 8), generator=generator).cuda()
        given = {} if forced is None or i + 1 == steps else dict(text=forced[:, 0, i + 1], agent=forced[:, 1:9, i + 1])
        out = stream.step(state, user, return_text_logits=True, **given)
        tokens.append(out.tokens)
        logits.append(out.text_logits)
    return torch.stack(tokens, dim=2), torch.stack(logits, dim=1)


def lm_step_ms(models, slots: int, kv_dtype: str) -> tuple[float, float]:
    """p50 ms of the LM part of a step (one CUDA graph) with every slot at full context, and peak GB."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    backend = ModelBackend(models.mimi, models.lm, num_slots=slots, kv_dtype=kv_dtype)
    codes = torch.randint(0, 2048, (slots, 8), device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        backend.generate(codes)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        backend.generate(codes)
    ms = median_ms(graph.replay, repeats=30)
    peak = torch.cuda.max_memory_allocated() / 1e9
    del graph, backend
    return ms, peak


def reference_session(kv_dtype: str, weights: str, dtype: torch.dtype, forced: torch.Tensor | None = None):
    golden = load_file(REFERENCE / "lm_golden.safetensors", device="cuda")
    scenario = json.loads((REFERENCE / "scenario.json").read_text())
    lm = load_lm(REFERENCE / "lm16.safetensors", LMConfig.from_json(REFERENCE / "config.json"), "cuda", dtype)
    if weights == "fp8":
        lm.to_fp8_weights()
    stream = StreamingLM(lm, kv_dtype=kv_dtype)
    state = stream.init_state(1)
    prefill_persona(stream, state, golden["voice_codes"][0], scenario["text_prompt_tokens"])
    tokens, logits = [], []
    user = golden["user_codes"]
    for i in range(user.shape[2]):
        given = {} if forced is None or i + 1 == user.shape[2] else dict(
            text=forced[None, 0, i + 1].cuda(), agent=forced[None, 1:9, i + 1].clamp(min=0).cuda())
        out = stream.step(state, user[:, :, i], return_text_logits=True, **given)
        tokens.append(out.tokens[0])
        logits.append(out.text_logits[0])
    return torch.stack(tokens, dim=1).cpu(), torch.stack(logits).float().cpu()


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    valid = (a >= 0) & (b >= 0)
    return ((a == b) & valid).sum().item() / max(1, valid.sum().item())


def tiny_errors() -> list[dict]:
    f32_tokens, _ = reference_session("bf16", "bf16", torch.float32)
    _, f32_forced = reference_session("bf16", "bf16", torch.float32, forced=f32_tokens)
    bf16_tokens, _ = reference_session("bf16", "bf16", torch.bfloat16)
    rows = []
    for kv_dtype, weights in PRECISIONS:
        tokens, _ = reference_session(kv_dtype, weights, torch.bfloat16)
        _, forced = reference_session(kv_dtype, weights, torch.bfloat16, forced=f32_tokens)
        rows.append(dict(kv=kv_dtype, weights=weights, text_logits_error_vs_f32=relative_error(forced, f32_forced),
                         tokens_vs_f32=agreement(tokens, f32_tokens), tokens_vs_bf16=agreement(tokens, bf16_tokens)))
    return rows


def errors_and_steps() -> tuple[dict, dict]:
    """Sections 2 and 3, on one full-size dummy model quantised in place halfway."""
    models = load_models("dummy:full", "cuda")
    stream = StreamingLM(models.lm)
    bf16_tokens, _ = dummy_session(stream, None)
    _, reference = dummy_session(stream, bf16_tokens)
    dummy = {"fp8 kv/bf16": relative_error(dummy_session(StreamingLM(models.lm, kv_dtype="fp8"), bf16_tokens)[1],
                                           reference)}
    steps = {"bf16 @80": lm_step_ms(models, 80, "bf16"), "fp8 kv @80": lm_step_ms(models, 80, "fp8")}
    models.lm.to_fp8_weights()
    torch.cuda.empty_cache()
    dummy["bf16 kv/fp8"] = relative_error(dummy_session(StreamingLM(models.lm), bf16_tokens)[1], reference)
    dummy["fp8 kv/fp8"] = relative_error(dummy_session(StreamingLM(models.lm, kv_dtype="fp8"), bf16_tokens)[1],
                                         reference)
    steps["fp8 w @80"] = lm_step_ms(models, 80, "bf16")
    steps["fp8 w+kv @80"] = lm_step_ms(models, 80, "fp8")
    steps["fp8 w+kv @160"] = lm_step_ms(models, 160, "fp8")
    del models
    torch.cuda.empty_cache()
    return dummy, {name: {"ms": ms, "peak_gb": gb} for name, (ms, gb) in steps.items()}


def main(out: Path, sections: set[str]) -> None:
    """`sections`: kernel, model (sections 2 and 3), tiny; all by default."""
    result: dict = {"device": torch.cuda.get_device_name()}
    if "kernel" in sections:
        result["kernel"] = kernel_sweep()
    if "model" in sections:
        result["dummy_text_logits_error_vs_bf16"], result["lm_step"] = errors_and_steps()
    if "tiny" in sections:
        result["tiny"] = tiny_errors()
    out.write_text(json.dumps(result, indent=2) + "\n")

    for r in result.get("kernel", []):
        print(f"attention 80x32x3000 {r['path']:<70} {r['ms']:.3f} ms {r['tbs']:.2f} TB/s err {r.get('error', 0):.1e}")
    for name, value in result.get("dummy_text_logits_error_vs_bf16", {}).items():
        print(f"dummy:full text logits error vs bf16, kv/weights {name}: {value:.4f}")
    for name, step in result.get("lm_step", {}).items():
        print(f"LM step {name:<14} {step['ms']:6.2f} ms  peak {step['peak_gb']:6.1f} GB")
    for r in result.get("tiny", []):
        print(f"tiny kv {r['kv']:>4} weights {r['weights']:>4}: logits err vs f32 {r['text_logits_error_vs_f32']:.4f}, "
              f"tokens vs f32 {r['tokens_vs_f32']:.3f}, vs bf16 {r['tokens_vs_bf16']:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("precision-check.json"),
         set(sys.argv[2].split(",")) if len(sys.argv) > 2 else {"kernel", "model", "tiny"})
