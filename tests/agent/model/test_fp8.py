"""FP8 weights: rows quantised per channel, the linear layer's reference path, and a whole LM in FP8."""

import json

import torch
from safetensors.torch import load_file

from agent.model.checkpoint import dummy_lm, load_lm
from agent.model.fp8 import dequantize_rows, fp8_linear, quantize_rows
from agent.model.lm import LMConfig
from agent.model.persona_prompt import prefill_persona
from agent.model.stream import StreamingLM


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_each_row_is_scaled_to_the_fp8_range():
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, 5)[:, None]
    values, scale = quantize_rows(x)
    assert values.dtype == torch.float8_e4m3fn and scale.shape == (5,)
    assert torch.equal(values.float().abs().amax(dim=-1), torch.full((5,), 448.0))
    assert relative_error(dequantize_rows(values, scale, torch.float32), x) < 0.04


def test_an_all_zero_row_stays_zero():
    values, scale = quantize_rows(torch.zeros(2, 8))
    assert torch.equal(dequantize_rows(values, scale, torch.float32), torch.zeros(2, 8))


def test_fp8_linear_is_close_to_the_float_product():
    generator = torch.Generator().manual_seed(1)
    weight, x = torch.randn(48, 80, generator=generator) * 0.02, torch.randn(2, 3, 80, generator=generator)
    y = fp8_linear(x, *quantize_rows(weight))
    assert y.shape == (2, 3, 48)
    assert 1e-3 < relative_error(y, x @ weight.T) < 0.06


def test_fp8_weights_keep_the_parameters_and_leave_embeddings_and_heads():
    lm = dummy_lm(LMConfig.tiny(), dtype=torch.float32)
    names = {name: p.shape for name, p in lm.named_parameters()}
    lm.to_fp8_weights()
    assert {name: p.shape for name, p in lm.named_parameters()} == names
    fp8 = {name for name, p in lm.named_parameters() if p.dtype == torch.float8_e4m3fn}
    assert "transformer.layers.0.self_attn.in_proj_weight" in fp8
    assert "depformer.layers.1.gating.3.linear_out.weight" in fp8
    assert not {"text_linear.weight", "emb.0.weight", "linears.0.weight", "depformer_in.0.weight"} & fp8
    assert lm.transformer.layers[0].self_attn.in_proj_scale.shape == (3 * 32,)


def reference_logits(reference_dir, kv_dtype: str, weights: str, forced: torch.Tensor | None = None):
    """Tokens [17, T] and text logits [T, V] of the reference session, float32 on the CPU."""
    golden = load_file(reference_dir / "lm_golden.safetensors")
    scenario = json.loads((reference_dir / "scenario.json").read_text())
    lm = load_lm(reference_dir / "lm16.safetensors", LMConfig.from_json(reference_dir / "config.json"),
                 dtype=torch.float32)
    if weights == "fp8":
        lm.to_fp8_weights()
    stream = StreamingLM(lm, kv_dtype=kv_dtype)
    state = stream.init_state(1)
    prefill_persona(stream, state, golden["voice_codes"][0], scenario["text_prompt_tokens"])
    user = golden["user_codes"]
    tokens, logits = [], []
    for i in range(user.shape[2]):
        given = {} if forced is None or i + 1 == user.shape[2] else dict(
            text=forced[None, 0, i + 1], agent=forced[None, 1:9, i + 1].clamp(min=0))
        out = stream.step(state, user[:, :, i], return_text_logits=True, **given)
        tokens.append(out.tokens[0])
        logits.append(out.text_logits[0])
    return torch.stack(tokens, dim=1), torch.stack(logits)


def test_8bit_text_logits_stay_close_to_float32_on_the_same_tokens(reference_dir):
    tokens, _ = reference_logits(reference_dir, "bf16", "bf16")
    _, expected = reference_logits(reference_dir, "bf16", "bf16", forced=tokens)
    errors = {(kv, weights): relative_error(reference_logits(reference_dir, kv, weights, forced=tokens)[1], expected)
              for kv, weights in (("fp8", "bf16"), ("bf16", "fp8"), ("fp8", "fp8"))}
    assert all(1e-4 < error < 0.03 for error in errors.values()), errors
