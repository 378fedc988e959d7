"""The CUDA path against the reference path (run on a CUDA machine; skipped elsewhere).

The FP8 ring decode kernel must give the reference attention (dequantise, then PyTorch's attention
under the visibility mask) for any ring: fresh, part-filled, wrapped, with rows reset; the FP8
product through `torch._scaled_mm` the reference product of the same quantised operands; and an
engine step with both must still be captured as one CUDA graph.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from agent.engine.backend import CallSetup, SamplingSettings
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrompt
from agent.model.checkpoint import dummy_lm
from agent.model.fp8 import fp8_linear, quantize_rows, scaled_mm_fits
from agent.model.kv_cache import Fp8KVCache, KVCache, Visibility, attend_pinned
from agent.model.lm import LMConfig
from agent.model.mimi import Mimi, MimiConfig

pytest.importorskip("triton", reason="CUDA builds of torch bring Triton; the CPU build does not")
from agent.model.cuda_kernels import quantize_rows_fp8, ring_decode_attention  # noqa: E402

GREEDY = SamplingSettings(text_temperature=0, text_top_k=0, audio_temperature=0, audio_top_k=0)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def random_ring(B: int, S: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions [B] and key positions [B, S] of rows at random ages, some wrapped, one reset."""
    positions = torch.randint(0, 3 * S, (B,), generator=generator)
    positions[0] = 0
    key_positions = torch.full((B, S), -1)
    for row, position in enumerate(positions.tolist()):
        steps = torch.arange(max(0, position - S + 1), position + 1)
        key_positions[row, steps % S] = steps
    if B > 2:  # a row reset and restored from a 5-frame prefix, now at position 9
        positions[2] = 9
        key_positions[2] = -1
        key_positions[2, :10] = torch.arange(10)
    return positions.cuda(), key_positions.cuda()


@pytest.mark.parametrize("block_s, num_warps", [(128, 4), (64, 4), (32, 8)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("B, H, S, D, context", [(6, 32, 3000, 128, 3000), (5, 8, 250, 64, 250),
                                                 (3, 2, 40, 16, 40), (4, 2, 37, 16, 20)])
def test_the_decode_kernel_is_the_reference_attention(block_s, num_warps, dtype, B, H, S, D, context):
    generator = torch.Generator().manual_seed(B * S + D)
    cache = Fp8KVCache(B, H, S, D, "cuda")
    k, v, q = (torch.randn(shape, generator=generator).cuda().to(dtype) * 2
               for shape in ((B, H, S, D), (B, H, S, D), (B, H, 1, D)))
    cache.write(torch.arange(S, device="cuda").expand(B, S), k, v)
    positions, key_positions = random_ring(B, S, generator)
    visibility = Visibility(positions[:, None], key_positions, S, context)
    out = ring_decode_attention(q, cache.k, cache.v, cache.k_scale, cache.v_scale, *visibility.window,
                                block_s=block_s, num_warps=num_warps)
    k_ref, v_ref = (values.float() * scale[..., None] for values, scale in ((cache.k, cache.k_scale),
                                                                             (cache.v, cache.v_scale)))
    reference = F.scaled_dot_product_attention(q.float(), k_ref, v_ref, attn_mask=visibility.mask)
    assert out.dtype == dtype and out.shape == (B, H, 1, D)
    assert relative_error(out, reference) < (1e-5 if dtype == torch.float32 else 1e-2)
    if block_s == 128:  # the default: what the ring's own attention runs on CUDA
        assert torch.equal(cache.attend(q, visibility), out)


def pinned_ring(B: int, S: int, generator: torch.Generator) -> Visibility:
    """One query per row of rows that pinned a prompt (or none) and stepped on, some far past the wrap."""
    pinned = torch.randint(1, S // 2, (B,), generator=generator)
    pinned[1] = 0
    positions = pinned + torch.randint(0, 3 * S, (B,), generator=generator)
    positions[0] = pinned[0] + 3  # before the ring is full
    key_positions = torch.full((B, S), -1)
    for row, (position, count) in enumerate(zip(positions.tolist(), pinned.tolist())):
        steps = torch.arange(position + 1)
        slots = torch.where(steps < count, steps, count + (steps - count) % (S - count))
        key_positions[row].scatter_(0, slots, steps)
    return Visibility(positions[:, None].cuda(), key_positions.cuda(), S, S, pinned.cuda())


def rotated_queries(shape: tuple[int, ...], generator: torch.Generator, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.randn(shape, generator=generator).cuda().to(dtype) * 2 for _ in range(2))


@pytest.mark.parametrize("B, H, S, D", [(6, 32, 3000, 128), (5, 8, 250, 64)])
def test_the_merged_pinned_attention_on_cuda_is_the_direct_softmax(B, H, S, D):
    """One memory-efficient attention for both queries, merged by log-sum-exp, against one softmax."""
    generator = torch.Generator().manual_seed(S + D)
    cache = KVCache(B, H, S, D, "cuda", torch.bfloat16)
    k, v = (torch.randn(B, H, S, D, generator=generator).cuda().bfloat16() * 2 for _ in range(2))
    cache.write(torch.arange(S, device="cuda").expand(B, S), k, v)
    visibility = pinned_ring(B, S, generator)
    q, q_pinned = rotated_queries((B, H, 1, D), generator, torch.bfloat16)
    out = cache.attend(q, visibility, q_pinned)
    cpu = Visibility(*(t.cpu() for t in (visibility.positions, visibility.key_positions)), S, S,
                     visibility.pinned.cpu())
    reference = attend_pinned(q.float().cpu(), q_pinned.float().cpu(), k.float().cpu(), v.float().cpu(), cpu)
    assert out.dtype == torch.bfloat16 and relative_error(out.cpu(), reference) < 1e-2


@pytest.mark.parametrize("block_s, num_warps", [(128, 4), (32, 8)])
def test_the_decode_kernel_scores_pinned_slots_with_their_query(block_s, num_warps):
    B, H, S, D = 5, 8, 250, 64
    generator = torch.Generator().manual_seed(7)
    cache = Fp8KVCache(B, H, S, D, "cuda")
    k, v = (torch.randn(B, H, S, D, generator=generator).cuda().bfloat16() * 2 for _ in range(2))
    cache.write(torch.arange(S, device="cuda").expand(B, S), k, v)
    visibility = pinned_ring(B, S, generator)
    q, q_pinned = rotated_queries((B, H, 1, D), generator, torch.bfloat16)
    out = ring_decode_attention(q, cache.k, cache.v, cache.k_scale, cache.v_scale, *visibility.window,
                                block_s=block_s, num_warps=num_warps, pinned=(q_pinned, visibility.pinned.int()))
    k_ref, v_ref = (values.float() * scale[..., None] for values, scale in ((cache.k, cache.k_scale),
                                                                             (cache.v, cache.v_scale)))
    reference = attend_pinned(q.float().cpu(), q_pinned.float().cpu(), k_ref.cpu(), v_ref.cpu(),
                              Visibility(visibility.positions.cpu(), visibility.key_positions.cpu(), S, S,
                                         visibility.pinned.cpu()))
    assert relative_error(out.cpu(), reference) < 1e-2
    if block_s == 128:  # what the FP8 ring's own attention runs on CUDA
        assert torch.equal(cache.attend(q, visibility, q_pinned), out)


def test_the_quantising_kernel_is_the_reference_quantisation():
    x = torch.randn(80, 11264, device="cuda") * torch.logspace(-2, 2, 80, device="cuda")[:, None]
    values, scales = quantize_rows_fp8(x.bfloat16())
    expected_values, expected_scales = quantize_rows(x.bfloat16())
    torch.testing.assert_close(scales[:, 0], expected_scales, rtol=1e-6, atol=0)
    # the same rounding, up to the last bit of the division before it
    steps = (values.float() - expected_values.float()).abs() / expected_values.float().abs().clamp(min=2 ** -6)
    assert steps.max() <= 0.125 and (values.float() != expected_values.float()).float().mean() < 1e-3


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
