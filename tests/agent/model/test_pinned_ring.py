"""A KV ring that pins a prompt: the pinned keys are attended at the intended relative positions.

The direct computation: a one-layer transformer's output at step t depends only on which inputs it
attends and at what distance, so it must equal the same transformer run without a ring on the
sequence the pinned ring stands for (the prompt, then the conversation frames the step sees),
whose positions put every key at its intended distance from the query.
"""

import pytest
import torch

from agent.model.kv_cache import Visibility
from agent.model.transformer import Transformer, TransformerConfig

C = 12  # the ring's capacity (and the context): a step sees C - 1 keys
P = 4  # pinned prompt frames
DIM = 16


def transformer(num_layers: int, seed: int = 0) -> Transformer:
    config = TransformerConfig(dim=DIM, num_heads=2, num_layers=num_layers, dim_feedforward=4 * DIM, context=C,
                               norm="rms_norm_f32", gating="silu")
    model = Transformer(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def stream(model: Transformer, x: torch.Tensor, pinned: torch.Tensor | None) -> torch.Tensor:
    """Prefill each row's prompt x[:, :P] in one forward, pin it where `pinned` [B] says (None: a
    ring that cannot pin), then step the rest one frame at a time -> the outputs of the steps."""
    state = model.init_state(x.shape[0], pinnable=pinned is not None)
    with torch.no_grad():
        model(x[:, :P], state)
        if pinned is not None:
            state.pinned.copy_(pinned)
        return torch.cat([model(x[:, t:t + 1], state) for t in range(P, x.shape[1])], dim=1)


def direct(model: Transformer, x: torch.Tensor, t: int, pinned: bool) -> torch.Tensor:
    """The output at step t from the sequence of keys the ring should show, as a stateless forward."""
    seen = C - 1  # keys a full ring shows, the PersonaPlex ring hiding its oldest slot
    if t < seen:
        sequence = x[:, :t + 1]
    elif pinned:  # the prompt just before the oldest conversation frame seen, t - seen + 1 + P
        sequence = torch.cat([x[:, :P], x[:, t - seen + 1 + P:t + 1]], dim=1)
    else:
        sequence = x[:, t - seen + 1:t + 1]
    with torch.no_grad():
        return model(sequence)[:, -1]


@pytest.mark.parametrize("pinned", [True, False])
def test_each_step_attends_the_keys_at_their_intended_distances(pinned):
    model = transformer(num_layers=1)
    x = torch.randn(1, 4 * C, DIM, generator=torch.Generator().manual_seed(1))
    outputs = stream(model, x, torch.tensor([P]) if pinned else None)
    for t in range(P, x.shape[1]):
        torch.testing.assert_close(outputs[:, t - P], direct(model, x, t, pinned), rtol=1e-5, atol=1e-5)


def test_a_pinned_row_is_the_window_ring_until_the_ring_is_full_and_keeps_its_prompt_after():
    model = transformer(num_layers=2)
    x = torch.randn(1, 3 * C, DIM, generator=torch.Generator().manual_seed(2))
    pinned, window = stream(model, x, torch.tensor([P])), stream(model, x, None)
    before = C - 1 - P  # the steps at positions P..C-2: the window ring still shows the whole prompt
    torch.testing.assert_close(pinned[:, :before], window[:, :before], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(pinned[:, before], window[:, before], atol=1e-3)


def test_rows_pinning_different_prompts_step_as_each_alone():
    model = transformer(num_layers=2)
    x = torch.randn(3, 3 * C, DIM, generator=torch.Generator().manual_seed(3))
    pinned = torch.tensor([P, 0, 2])
    together = stream(model, x, pinned)
    for row in range(3):
        alone = stream(model, x[row:row + 1], pinned[row:row + 1])
        torch.testing.assert_close(together[row:row + 1], alone, rtol=1e-6, atol=1e-6)


def test_the_pinned_slots_are_never_written_again():
    model = transformer(num_layers=1)
    state = model.init_state(1, pinnable=True)
    x = torch.randn(1, 5 * C, DIM, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        model(x[:, :P], state)
        prompt_keys = state.caches[0].k[:, :, :P].clone()
        state.pinned.fill_(P)
        for t in range(P, x.shape[1]):
            model(x[:, t:t + 1], state)
            held = {p for p in state.key_positions[0].tolist() if p >= 0}
            assert held == set(range(P)) | set(range(max(P, t - (C - P) + 1), t + 1))
    assert torch.equal(state.caches[0].k[:, :, :P], prompt_keys)
    assert state.key_positions[0, :P].tolist() == list(range(P))


@pytest.mark.parametrize("position", [P, C - 2, C - 1, C, 3 * C + 5])
def test_a_pinned_ring_shows_as_many_keys_as_the_window_ring_at_distances_it_shows(position):
    """Distances 0..C-2 each once when full: pinned keys from the pinned query, the rest from the step's."""
    model = transformer(num_layers=1)
    state = model.init_state(1, pinnable=True)
    state.pinned.fill_(P)
    positions = torch.arange(position + 1)[None]
    state.key_positions.scatter_(1, state.write_index(positions), positions)
    visibility = Visibility(torch.tensor([[position]]), state.key_positions, C, C, state.pinned)
    keys = state.key_positions[0]
    pinned_distances = (visibility.pinned_positions[0, 0] - keys)[visibility.pinned_mask[0, 0, 0]]
    conversation_distances = (position - keys)[visibility.mask[0, 0, 0]]
    distances = sorted(torch.cat([pinned_distances, conversation_distances]).tolist())
    assert distances == list(range(min(position, C - 2) + 1))
