"""The batched engine against the upstream reference session (greedy, float32, CPU)."""

import dataclasses

import pytest
import torch

from agent.engine.backend import CallSetup, SamplingSettings
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrompt
from agent.model.persona_prompt import prefill_persona

GREEDY = SamplingSettings(text_temperature=0, text_top_k=0, audio_temperature=0, audio_top_k=0)

pytestmark = pytest.mark.reference


def other_call(text_tokens: tuple[int, ...], seed: int) -> CallSetup:
    """A busy neighbour: another role, sampling on."""
    return CallSetup(prompt=PersonaPrompt(voice=None, text_tokens=text_tokens), seed=seed)


def random_codes(generator: torch.Generator, slots: int) -> torch.Tensor:
    return torch.randint(0, 2048, (slots, 8), generator=generator)


def run_reference(backend: ModelBackend, slot: int, golden, events=None) -> torch.Tensor:
    """Step the reference conversation in `slot` while the other slots get random caller codes.

    `events` maps a step index to a function of the backend run before that step (joins, leaves).
    """
    generator = torch.Generator().manual_seed(0)
    user = golden["user_codes"][0]  # [8, T]
    tokens = []
    for i in range(user.shape[1]):
        if events and i in events:
            events[i](backend)
        codes = random_codes(generator, backend.num_slots)
        codes[slot] = user[:, i]
        out, valid = backend.generate(codes)
        assert valid[slot]
        tokens.append(out[slot])
    return torch.stack(tokens, dim=1)  # [17, T]


def test_a_slot_alone_matches_the_reference(models, golden, reference_call):
    backend = ModelBackend(*models, num_slots=1)
    backend.join(0, reference_call)
    assert torch.equal(run_reference(backend, 0, golden), golden["lm16_tokens"][0])


def test_a_slot_beside_three_busy_slots_matches_the_reference(models, golden, reference_call):
    backend = ModelBackend(*models, num_slots=4)
    for slot, tokens in ((0, (5, 6, 7)), (1, (8,)), (3, (9, 10, 11, 12))):
        backend.join(slot, other_call(tokens, seed=slot))
    backend.join(2, reference_call)
    assert torch.equal(run_reference(backend, 2, golden), golden["lm16_tokens"][0])


def test_a_slot_joining_late_while_another_leaves_matches_the_reference(models, golden, reference_call):
    backend = ModelBackend(*models, num_slots=4)
    generator = torch.Generator().manual_seed(1)
    for slot in (0, 1, 3):
        backend.join(slot, other_call((20 + slot,), seed=slot))
    for _ in range(45):  # the others run past their context (40) before the call joins
        backend.generate(random_codes(generator, 4))
    backend.join(2, reference_call)
    events = {
        7: lambda b: b.leave(1),
        12: lambda b: b.join(1, other_call((30, 31), seed=9)),
        20: lambda b: b.leave(0),
    }
    assert torch.equal(run_reference(backend, 2, golden, events), golden["lm16_tokens"][0])


def test_the_cached_prefix_is_copied_never_shared(models, golden, reference_call):
    backend = ModelBackend(*models, num_slots=2)
    backend.join(0, reference_call)
    prefix = backend.prefixes.get(reference_call.prompt.key)
    snapshot = [t.clone() for t in (*prefix.keys, *prefix.values, prefix.tokens, prefix.provided)]
    run_reference(backend, 0, golden)
    assert all(torch.equal(a, b) for a, b in
               zip(snapshot, (*prefix.keys, *prefix.values, prefix.tokens, prefix.provided)))
    backend.join(1, reference_call)  # a cache hit, after slot 0 ran its whole call
    assert backend.prefixes.hits >= 1 and backend.prefixes.misses == 1
    assert torch.equal(run_reference(backend, 1, golden), golden["lm16_tokens"][0])


def test_the_persona_cache_evicts_the_least_recently_used(models):
    backend = ModelBackend(*models, num_slots=1)
    calls = [CallSetup(prompt=PersonaPrompt(voice=None, text_tokens=(t, t + 1))) for t in (10, 20, 30)]
    backend.join(0, calls[0])
    backend.prefixes.max_bytes = 2 * backend.prefixes.nbytes
    backend.join(0, calls[1])
    backend.join(0, calls[0])  # now calls[1] is the least recently used
    backend.join(0, calls[2])
    assert len(backend.prefixes) == 2
    misses = backend.prefixes.misses
    backend.join(0, calls[0])
    assert backend.prefixes.misses == misses  # still cached
    backend.join(0, calls[1])
    assert backend.prefixes.misses == misses + 1  # was evicted


def test_a_calls_sampled_tokens_do_not_depend_on_its_neighbours(models, golden, reference_call):
    call = CallSetup(prompt=reference_call.prompt, seed=42)  # upstream's default sampling
    alone = ModelBackend(*models, num_slots=1)
    alone.join(0, call)
    crowded = ModelBackend(*models, num_slots=3)
    crowded.join(0, other_call((7,), seed=1))
    crowded.join(1, call)
    crowded.join(2, other_call((8,), seed=2))
    alone_tokens = run_reference(alone, 0, golden)
    assert torch.equal(alone_tokens, run_reference(crowded, 1, golden))
    reseeded = ModelBackend(*models, num_slots=1)
    reseeded.join(0, CallSetup(prompt=reference_call.prompt, seed=43))
    assert not torch.equal(alone_tokens, run_reference(reseeded, 0, golden))


def test_the_whole_step_turns_caller_audio_into_agent_audio(models, reference_call):
    backend = ModelBackend(*models, num_slots=2)
    backend.join(1, reference_call)
    active = torch.tensor([False, True])
    for _ in range(3):
        out = backend.step(torch.randn(2, 1920) * 0.1, active)
    assert out.pcm.shape == (2, 1920) and out.pcm.dtype == torch.float32
    assert out.ready.tolist() == [False, True]
    assert torch.isfinite(out.pcm).all() and out.pcm[1].abs().max() > 0


# -- pinned personas: the prompt kept in the ring past the context ------------------------------

def pinned(call: CallSetup) -> CallSetup:
    return dataclasses.replace(call, keep_persona="pinned")


def steps_until_full(backend: ModelBackend, slot: int) -> int:
    """Steps a slot takes, just after its join, before its ring stops showing its whole prompt:
    those at positions P..context-2 (a full ring hides its oldest slot)."""
    return backend.lm.config.context - 1 - int(backend.lm_state.transformer.positions[slot])


def run_codes(backend: ModelBackend, slot: int, steps: int, seed: int) -> torch.Tensor:
    """Step random caller codes (the same in `slot` whatever the seed of the others) -> tokens [17, steps]."""
    own, others = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    tokens = []
    for _ in range(steps):
        codes = random_codes(others, backend.num_slots)
        codes[slot] = random_codes(own, 1)[0]
        out, _ = backend.generate(codes)
        tokens.append(out[slot])
    return torch.stack(tokens, dim=1)


@pytest.mark.parametrize("neighbours", [0, 3])
def test_a_pinned_slot_matches_the_reference_until_its_ring_is_full(models, golden, reference_call, neighbours):
    backend = ModelBackend(*models, num_slots=1 + neighbours, pin_personas=True)
    for slot in range(1, 1 + neighbours):
        call = other_call((5 + slot,) * slot, seed=slot)
        backend.join(slot, pinned(call) if slot % 2 else call)
    backend.join(0, pinned(reference_call))
    steps = steps_until_full(backend, 0)
    assert 0 < steps < golden["lm16_tokens"].shape[2]  # the reference call outlasts the context
    tokens = run_reference(backend, 0, golden)
    assert torch.equal(tokens[:, :steps], golden["lm16_tokens"][0, :, :steps])


def test_a_window_slot_in_a_ring_that_pins_matches_the_reference_past_its_context(models, golden, reference_call):
    backend = ModelBackend(*models, num_slots=3, pin_personas=True)
    backend.join(0, pinned(other_call((5, 6), seed=1)))
    backend.join(2, pinned(other_call((7,), seed=2)))
    backend.join(1, reference_call)
    assert torch.equal(run_reference(backend, 1, golden), golden["lm16_tokens"][0])


def test_a_pinned_slot_past_its_context_is_unchanged_by_its_neighbours(models, reference_call):
    steps = 3 * models[1].config.context
    alone = ModelBackend(*models, num_slots=1, pin_personas=True)
    alone.join(0, pinned(reference_call))
    crowded = ModelBackend(*models, num_slots=4, pin_personas=True)
    crowded.join(0, other_call((7, 8), seed=1))
    crowded.join(3, pinned(other_call((9,), seed=2)))
    run_codes(crowded, 1, 17, seed=5)  # the neighbours at other offsets
    crowded.join(1, pinned(reference_call))
    crowded.join(2, other_call((10, 11, 12), seed=3))
    assert torch.equal(run_codes(alone, 0, steps, seed=9), run_codes(crowded, 1, steps, seed=9))


def test_a_cached_persona_restored_pinned_equals_a_fresh_prefill_in_the_slot(models, reference_call):
    backend = ModelBackend(*models, num_slots=2, pin_personas=True)
    backend.join(1, pinned(reference_call))  # the prefix, prefilled in a scratch ring
    backend.join(0, pinned(reference_call))  # restored from the cache
    assert backend.prefixes.hits == 1
    stream = backend.stream
    fresh = stream.init_state(1, pinnable=True)
    prompt = reference_call.prompt
    prefill_persona(stream, fresh, prompt.voice, prompt.text_tokens, prompt.silence_frames)
    fresh.transformer.pinned.copy_(fresh.transformer.positions)  # pin the prompt it just stepped
    generator = torch.Generator().manual_seed(3)
    for _ in range(3 * models[1].config.context):
        codes = random_codes(generator, 2)
        restored, _ = backend.generate(codes)
        assert torch.equal(restored[0], stream.step(fresh, codes[:1]).tokens[0])


def test_a_pinned_call_on_a_ring_that_cannot_pin_keeps_the_window(models, golden, reference_call, caplog):
    backend = ModelBackend(*models, num_slots=1, pin_personas=False)
    backend.join(0, pinned(reference_call))
    assert "keeps the window" in caplog.text
    assert torch.equal(run_reference(backend, 0, golden), golden["lm16_tokens"][0])  # upstream's, past the wrap
