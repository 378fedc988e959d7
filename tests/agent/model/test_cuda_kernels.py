"""The CUDA path against the reference path (run on a CUDA machine; skipped elsewhere).

The ring decode kernel must give the reference attention (dequantise, then PyTorch's attention
under the visibility mask, or the direct softmax of a ring that pins) for any ring: fresh,
part-filled, wrapped, with rows reset, pinning, FP8 or the model's dtype, in one piece or split;
the FP8 product through `torch._scaled_mm` the reference product of the same quantised operands;
and an engine step with both must still be captured as one CUDA graph.
(scripts/check_kernels_interpreted.py checks the same kernels on the CPU under Triton's interpreter.)
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from decode_rings import pinned_ring, random_ring, random_turn

from agent.engine.backend import CallSetup, SamplingSettings
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrompt
from agent.model.checkpoint import dummy_lm
from agent.model.fp8 import dequantize_rows, fp8_linear, quantize_rows, scaled_mm_fits
from agent.model.kv_cache import Fp8KVCache, KVCache, Visibility, attend_pinned
from agent.model.lm import LMConfig
from agent.model.mimi import Mimi, MimiConfig
from agent.model.rope import apply_rope

pytest.importorskip("triton", reason="CUDA builds of torch bring Triton; the CPU build does not")
from agent.model.cuda_kernels import decode_splits, quantize_rows_fp8, ring_decode_attention

GREEDY = SamplingSettings(text_temperature=0, text_top_k=0, audio_temperature=0, audio_top_k=0)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def stored(cache: Fp8KVCache | KVCache) -> tuple[torch.Tensor, torch.Tensor]:
    """The ring's keys and values as the kernel reads them, in float32."""
    if isinstance(cache, KVCache):
        return cache.k.float(), cache.v.float()
    return tuple(values.float() * scale[..., None] for values, scale in ((cache.k, cache.k_scale),
                                                                          (cache.v, cache.v_scale)))


def scales(cache: Fp8KVCache | KVCache) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    return (cache.k_scale, cache.v_scale) if isinstance(cache, Fp8KVCache) else (None, None)


@pytest.mark.parametrize("splits", [None, 1, 4])
@pytest.mark.parametrize("block_s, num_warps", [(None, None), (128, 4), (64, 4), (32, 8), (16, 1)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("B, H, S, D, context", [(6, 32, 3000, 128, 3000), (5, 8, 250, 64, 250),
                                                 (3, 2, 40, 16, 40), (4, 2, 37, 16, 20)])
def test_the_decode_kernel_is_the_reference_attention(splits, block_s, num_warps, dtype, B, H, S, D, context):
    generator = torch.Generator().manual_seed(B * S + D)
    cache = Fp8KVCache(B, H, S, D, "cuda")
    k, v, q = (torch.randn(shape, generator=generator).cuda().to(dtype) * 2
               for shape in ((B, H, S, D), (B, H, S, D), (B, H, 1, D)))
    cache.write(torch.arange(S, device="cuda").expand(B, S), k, v)
    positions, key_positions = random_ring(B, S, generator, "cuda")
    visibility = Visibility(positions[:, None], key_positions, S, context)
    out = ring_decode_attention(q, cache.k, cache.v, cache.k_scale, cache.v_scale, *visibility.window,
                                block_s=block_s, num_warps=num_warps, splits=splits)
    reference = F.scaled_dot_product_attention(q.float(), *stored(cache), attn_mask=visibility.mask)
    assert out.dtype == dtype and out.shape == (B, H, 1, D)
    assert relative_error(out, reference) < (1e-5 if dtype == torch.float32 else 1e-2)
    if block_s is None and splits is None:  # the defaults: what the ring's own attention runs on CUDA
        assert torch.equal(cache.attend(q, visibility), out)


def turned_query(B: int, H: int, D: int, generator: torch.Generator):
    """A step's query [B, H, 1, D] in bf16, its turn for the pinned slots, and the turned query in float32."""
    q = torch.randn(B, H, 1, D, generator=generator).cuda().bfloat16() * 2
    turn = random_turn(B, D, generator, "cuda")
    return q, turn, apply_rope(q.float(), *turn)


@pytest.mark.parametrize("B, H, S, D", [(6, 32, 3000, 128), (5, 8, 250, 64)])
def test_the_merged_pinned_attention_on_cuda_is_the_direct_softmax(B, H, S, D):
    """What a prefill into a ring that pins runs on CUDA: one memory-efficient attention for both
    queries, merged by log-sum-exp, against one softmax."""
    generator = torch.Generator().manual_seed(S + D)
    k, v = (torch.randn(B, H, S, D, generator=generator).cuda().bfloat16() * 2 for _ in range(2))
    visibility = pinned_ring(B, S, generator, "cuda")
    q, _, q_pinned = turned_query(B, H, D, generator)
    out = attend_pinned(q, q_pinned.bfloat16(), k, v, visibility)
    cpu = Visibility(*(t.cpu() for t in (visibility.positions, visibility.key_positions)), S, S,
                     visibility.pinned.cpu())
    reference = attend_pinned(q.float().cpu(), q_pinned.float().cpu(), k.float().cpu(), v.float().cpu(), cpu)
    assert out.dtype == torch.bfloat16 and relative_error(out.cpu(), reference) < 1e-2


@pytest.mark.parametrize("splits", [None, 1, 3])
@pytest.mark.parametrize("block_s, num_warps", [(None, None), (32, 8), (16, 1)])
@pytest.mark.parametrize("ring", ["fp8", "bf16"])
@pytest.mark.parametrize("B, H, S, D", [(6, 32, 3000, 128), (5, 8, 250, 64)])
def test_the_decode_kernel_scores_pinned_slots_with_their_query(splits, block_s, num_warps, ring, B, H, S, D):
    """One pass over a ring that pins, FP8 or bf16: the pinned slots with the step's query turned in
    the kernel, the rest with the step's, one softmax; against the direct softmax of the values as
    stored, the query turned in float32."""
    generator = torch.Generator().manual_seed(7)
    cache = Fp8KVCache(B, H, S, D, "cuda") if ring == "fp8" else KVCache(B, H, S, D, "cuda", torch.bfloat16)
    k, v = (torch.randn(B, H, S, D, generator=generator).cuda().bfloat16() * 2 for _ in range(2))
    cache.write(torch.arange(S, device="cuda").expand(B, S), k, v)
    visibility = pinned_ring(B, S, generator, "cuda")
    q, turn, q_pinned = turned_query(B, H, D, generator)
    out = ring_decode_attention(q, cache.k, cache.v, *scales(cache), *visibility.window, block_s=block_s,
                                num_warps=num_warps, pinned=(*(t.reshape(B, -1) for t in turn),
                                                             visibility.pinned_counts), splits=splits)
    reference = attend_pinned(q.float().cpu(), q_pinned.float().cpu(), *(x.cpu() for x in stored(cache)),
                              Visibility(visibility.positions.cpu(), visibility.key_positions.cpu(), S, S,
                                         visibility.pinned.cpu()))
    assert out.dtype == torch.bfloat16 and relative_error(out.cpu(), reference) < 1e-2
    if block_s is None and splits is None:  # what the ring's own attention runs on CUDA for a step
        assert torch.equal(cache.attend(q, visibility, turn), out)


def test_the_rings_are_split_only_where_rows_and_heads_leave_the_gpu_idle():
    multiprocessors = torch.cuda.get_device_properties(0).multi_processor_count
    assert decode_splits(80 * 32, 3000, 128, multiprocessors) == 1
    assert decode_splits(32, 3000, 128, multiprocessors) > 1  # one call: 32 programs
    assert decode_splits(32, 100, 128, multiprocessors) == 1  # one block of slots: nothing to split


def test_the_quantising_kernel_is_the_reference_quantisation():
    x = torch.randn(80, 11264, device="cuda") * torch.logspace(-2, 2, 80, device="cuda")[:, None]
    values, scales = quantize_rows_fp8(x.bfloat16())
    expected_values, expected_scales = quantize_rows(x.bfloat16())
    torch.testing.assert_close(scales[:, 0], expected_scales, rtol=1e-6, atol=0)
    # the same rounding, up to the last bit of the division before it
    steps = (values.float() - expected_values.float()).abs() / expected_values.float().abs().clamp(min=2 ** -6)
    assert steps.max() <= 0.125 and (values.float() != expected_values.float()).float().mean() < 1e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_dequantising_kernel_is_the_reference_dequantisation_bit_for_bit(dtype):
    x = torch.randn(1, 32, 3000, 128, device="cuda") * torch.logspace(-3, 3, 3000, device="cuda")[:, None]
    values, scales = quantize_rows(x)  # a prefill's FP8 ring: [B, H, capacity, head_dim]
    assert torch.equal(dequantize_rows(values, scales, dtype, fused=True), dequantize_rows(values, scales, dtype))


@pytest.mark.parametrize("M", [1, 80, 160])
def test_scaled_mm_is_the_reference_fp8_product(M):
    weight = torch.randn(4096 * 3, 4096, device="cuda", dtype=torch.bfloat16) * 0.02
    x = torch.randn(M, 1, 4096, device="cuda", dtype=torch.bfloat16)
    values, scale = quantize_rows(weight)
    assert scaled_mm_fits(x, *weight.shape)
    fast = fp8_linear(x, values, scale)
    reference = fp8_linear(x.float(), values, scale)  # float32 activations take the reference path
    assert fast.dtype == torch.bfloat16 and fast.shape == (M, 1, 4096 * 3)
    assert relative_error(fast, reference) < 1e-2
    assert relative_error(fast, x @ weight.T) < 0.06


def small_lm_config() -> LMConfig:
    """The tiny LM widened so every FP8 product takes `torch._scaled_mm` (sizes multiples of 16)."""
    return dataclasses.replace(LMConfig.tiny(), dim=128, num_heads=4, context=64, depformer_dim=64,
                               depformer_dim_feedforward=264, depformer_num_heads=2)


@pytest.mark.parametrize("kv_dtype, weights", [("bf16", "bf16"), ("fp8", "bf16"), ("fp8", "fp8")])
def test_the_step_is_captured_as_a_cuda_graph(kv_dtype, weights):
    lm = dummy_lm(small_lm_config(), device="cuda", dtype=torch.bfloat16)
    if weights == "fp8":
        lm.to_fp8_weights()
    mimi = Mimi.dummy(MimiConfig.tiny(), device="cuda")
    eager = ModelBackend(mimi, lm, num_slots=4, kv_dtype=kv_dtype, cuda_graph=False, pin_personas=True)
    graphed = ModelBackend(mimi, lm, num_slots=4, kv_dtype=kv_dtype, pin_personas=True)
    eager.warm_up()
    graphed.warm_up()  # captures the step on CUDA
    pcm = torch.randn(4, 1920, generator=torch.Generator().manual_seed(0)) * 0.1
    active = torch.ones(4, dtype=torch.bool)
    call = CallSetup(prompt=PersonaPrompt(voice=None, text_tokens=(5, 6, 7)), sampling=GREEDY)
    for slot in range(4):  # half of them pinning their persona
        setup = dataclasses.replace(call, keep_persona="pinned" if slot % 2 else "window")
        eager.join(slot, setup)
        graphed.join(slot, setup)
    for _ in range(lm.config.context + 12):  # past the ring's wrap
        expected, out = eager.step(pcm, active), graphed.step(pcm, active)
        assert torch.equal(out.text, expected.text)
        torch.testing.assert_close(out.pcm, expected.pcm)
