import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from agent.model.checkpoint import dummy_lm, meta_lm
from agent.model.lm import LMConfig

TINY_CONFIG = Path(__file__).parents[2] / "data" / "personaplex-tiny" / "config.json"
PERSONAPLEX_7B_PARAMETERS = 8_371_408_896  # upstream LMModel(**_lm_kwargs, dep_q=16), counted on the meta device


def test_tiny_preset_is_the_reference_config():
    assert LMConfig.tiny() == LMConfig.from_json(TINY_CONFIG)


def test_unsupported_upstream_option_is_refused():
    kwargs = json.loads(TINY_CONFIG.read_text())["lm"] | {"norm": "layer_norm"}
    with pytest.raises(ValueError, match="norm='layer_norm'"):
        LMConfig.from_upstream(kwargs)


@pytest.mark.reference
def test_parameters_have_the_checkpoint_names_and_shapes(reference_dir):
    model = meta_lm(LMConfig.from_json(reference_dir / "config.json"))
    with safe_open(reference_dir / "lm16.safetensors", "pt") as f:
        stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    assert {name: tuple(p.shape) for name, p in model.state_dict().items()} == stored


def test_full_size_model_has_personaplex_7b_parameters():
    model = meta_lm(LMConfig.personaplex_7b(), torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == PERSONAPLEX_7B_PARAMETERS
    assert model.depformer.layers[0].self_attn.in_proj_weight.shape == (16 * 3 * 1024, 1024)
    assert model.text_linear.weight.shape == (32000, 4096)


def test_no_token_embeds_to_zero():
    lm = dummy_lm(LMConfig.tiny(), dtype=torch.float32)
    tokens = torch.full((1, 17, 2), -1)
    tokens[0, 0, 1] = 5  # text only at the second step
    x = lm.embed(tokens)
    assert torch.equal(x[0, 0], torch.zeros(32))
    assert torch.equal(x[0, 1], lm.text_emb.weight[5])


def test_initial_tokens_are_the_extra_embedding_rows():
    lm = dummy_lm(LMConfig.tiny(), dtype=torch.float32)
    assert lm.initial_tokens.tolist() == [96] + [2048] * 16
    assert lm.text_emb.num_embeddings == 97 and lm.emb[0].num_embeddings == 2049


def test_temporal_over_many_steps_equals_one_step_at_a_time():
    lm = dummy_lm(LMConfig.tiny(), dtype=torch.float32, seed=1)
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(0))
    hidden, logits = lm.temporal(x, lm.transformer.init_state(2))
    state = lm.transformer.init_state(2)
    steps = [lm.temporal(x[:, t:t + 1], state) for t in range(6)]
    torch.testing.assert_close(hidden, torch.cat([h for h, _ in steps], dim=1), rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, torch.cat([lg for _, lg in steps], dim=1), rtol=0, atol=1e-5)


def test_depformer_steps_use_their_own_weights():
    lm = dummy_lm(LMConfig.tiny(), dtype=torch.float32, seed=2)
    hidden, previous = torch.randn(2, 32), torch.tensor([1, 2])

    def logits_at(k: int) -> torch.Tensor:
        state = lm.depformer.init_state(2)
        for i in range(k):
            lm.depformer_step(i, hidden, previous, state)
        return lm.depformer_step(k, hidden, previous, state)

    before = [logits_at(k) for k in (2, 3)]
    with torch.no_grad():
        lm.linears[3].weight.mul_(2)
    assert torch.equal(logits_at(2), before[0])
    assert not torch.equal(logits_at(3), before[1])
