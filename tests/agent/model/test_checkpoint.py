from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from agent.model.checkpoint import CheckpointError, dummy_lm, load_lm
from agent.model.lm import LMConfig


@pytest.fixture(scope="module")
def config(reference_dir):
    return LMConfig.from_json(reference_dir / "config.json")


@pytest.fixture(scope="module")
def lm16_weights(reference_dir):
    return load_file(reference_dir / "lm16.safetensors")


@pytest.mark.reference
def test_loads_every_tensor(reference_dir, config, lm16_weights):
    state = load_lm(reference_dir / "lm16.safetensors", config, dtype=torch.float32).state_dict()
    assert state.keys() == lm16_weights.keys()
    assert all(torch.equal(state[name], w) for name, w in lm16_weights.items())


@pytest.mark.reference
def test_eight_step_depformer_is_expanded(reference_dir, config):
    lm8 = load_file(reference_dir / "lm8.safetensors")
    state = load_lm(reference_dir / "lm8.safetensors", config, dtype=torch.float32).state_dict()
    attention = "depformer.layers.1.self_attn.in_proj_weight"
    assert torch.equal(state[attention], torch.cat([lm8[attention], lm8[attention]]))
    assert torch.equal(state["linears.11.weight"], lm8["linears.3.weight"])
    assert torch.equal(state["depformer_in.8.weight"], lm8["depformer_in.0.weight"])
    assert torch.equal(state["depformer_emb.14.weight"], lm8["depformer_emb.6.weight"])
    assert torch.equal(state["depformer.layers.0.gating.15.linear_out.weight"],
                       lm8["depformer.layers.0.gating.7.linear_out.weight"])
    assert torch.equal(state["linears.3.weight"], lm8["linears.3.weight"])


@pytest.mark.reference
def test_loads_in_the_requested_dtype(reference_dir, config):
    lm = load_lm(reference_dir / "lm16.safetensors", config, dtype=torch.bfloat16)
    assert {p.dtype for p in lm.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in lm.parameters())


@pytest.mark.reference
def test_mismatched_checkpoint_names_every_problem(tmp_path, config, lm16_weights):
    weights = dict(lm16_weights)
    del weights["text_emb.weight"]
    weights["extra.weight"] = torch.zeros(2)
    weights["text_linear.weight"] = torch.zeros(95, 32)
    save_file(weights, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_lm(tmp_path / "bad.safetensors", config)
    message = str(error.value)
    assert "missing (1): text_emb.weight" in message
    assert "unexpected (1): extra.weight" in message
    assert "wrong shape (1): text_linear.weight (95, 32) (expected (96, 32))" in message


@pytest.mark.reference
def test_a_checkpoint_of_another_size_is_refused(reference_dir, config):
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_lm(reference_dir / "lm16.safetensors", replace(config, dim=2 * config.dim))


def test_dummy_weights_are_real_and_reproducible():
    a = dummy_lm(LMConfig.tiny(), dtype=torch.bfloat16, seed=7)
    b = dummy_lm(LMConfig.tiny(), dtype=torch.bfloat16, seed=7)
    params = dict(a.named_parameters())
    assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in params.values())
    assert all(torch.isfinite(p).all() for p in params.values())
    assert torch.equal(params["out_norm.alpha"], torch.ones_like(params["out_norm.alpha"]))
    assert 0.01 < params["text_linear.weight"].float().std() < 0.03
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = dummy_lm(LMConfig.tiny(), dtype=torch.bfloat16, seed=8)
    assert not torch.equal(c.text_linear.weight, a.text_linear.weight)
