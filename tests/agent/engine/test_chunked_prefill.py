"""Cold personas prefilled in chunks between steps (greedy, float32, CPU, the tiny reference model)."""


import pytest
import torch

from agent.engine.backend import CallSetup, SamplingSettings
from agent.engine.engine import ModelBackend
from agent.engine.pacer import PrefillPacer
from agent.engine.prefix import PersonaPrefill, PersonaPrefix, PersonaPrompt
from voices.prompt import load_voice_prompt

GREEDY = SamplingSettings(text_temperature=0, text_top_k=0, audio_temperature=0, audio_top_k=0)

pytestmark = pytest.mark.reference


def paced(backend: ModelBackend) -> ModelBackend:
    """Make `prefill(seconds)` run one forward of `seconds` steps: a pacer of one second a step."""
    backend.pacer = PrefillPacer(backend.device, fixed_seconds=0.0, seconds_per_frame=1.0, min_frames=1)
    return backend


def assert_same_prefix(a: PersonaPrefix, b: PersonaPrefix) -> None:
    """Tokens and positions equal; keys and values equal up to float32 rounding: CPU matrix kernels
    round a row differently with the number of rows in the call (1 ULP), as the prefill beside
    stepping does (tests/model/test_stream.py). The tokens a slot then makes are equal (below)."""
    assert a.offset == b.offset and a.positions == b.positions
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.provided, b.provided)
    for x, y in zip((*a.keys, *a.values), (*b.keys, *b.values)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_a_prefill_in_chunks_equals_the_one_pass_prefill(models, reference_call, chunk):
    scratch = ModelBackend(*models, num_slots=1).scratch
    prompt = reference_call.prompt
    assert_same_prefix(PersonaPrefill(scratch, prompt).run(chunk), PersonaPrefill(scratch, prompt).run(prompt.frames))


@pytest.mark.parametrize("chunk", [2, 5])
def test_a_stored_voices_prefill_in_chunks_equals_the_one_pass_prefill(models, reference_dir, reference_call, chunk):
    scratch = ModelBackend(*models, num_slots=1).scratch
    prompt = PersonaPrompt(voice=load_voice_prompt(reference_dir / "voice.pt"),
                           text_tokens=reference_call.prompt.text_tokens)
    assert_same_prefix(PersonaPrefill(scratch, prompt).run(chunk), PersonaPrefill(scratch, prompt).run(prompt.frames))


def step_reference(backend: ModelBackend, slot: int, golden, between) -> torch.Tensor:
    """Step the reference conversation in `slot`, random caller codes elsewhere, `between(i)` after step i."""
    generator = torch.Generator().manual_seed(0)
    user = golden["user_codes"][0]  # [8, T]
    tokens = []
    for i in range(user.shape[1]):
        codes = torch.randint(0, 2048, (backend.num_slots, 8), generator=generator)
        codes[slot] = user[:, i]
        out, valid = backend.generate(codes)
        assert valid[slot]
        tokens.append(out[slot])
        between(i)
    return torch.stack(tokens, dim=1)  # [17, T]


def test_a_running_slot_is_unchanged_while_another_slots_persona_is_prefilled(models, golden, reference_call):
    backend = paced(ModelBackend(*models, num_slots=3))
    backend.join(0, reference_call)
    cold = CallSetup(prompt=PersonaPrompt(voice=None, text_tokens=tuple(range(40, 60))), seed=3)
    ready_after: dict[int, int] = {}

    def between(i: int) -> None:
        if i == 2:
            assert not backend.begin_join(1, cold)
        if i >= 2:
            for slot, error in backend.prefill(4.0).items():
                assert error is None
                ready_after[slot] = i

    assert torch.equal(step_reference(backend, 0, golden, between), golden["lm16_tokens"][0])
    chunks = -(-(cold.prompt.frames - 1) // 4)
    assert ready_after == {1: 2 + chunks - 1}  # one chunk of 4 steps after each step


def test_a_slot_whose_persona_was_prefilled_between_steps_matches_the_reference(models, golden, reference_call):
    backend = paced(ModelBackend(*models, num_slots=3))
    backend.join(0, CallSetup(prompt=PersonaPrompt(voice=None, text_tokens=(7, 8)), seed=1))
    assert not backend.begin_join(1, reference_call)
    assert not backend.begin_join(2, reference_call)  # the same persona: waits for the same prefill
    generator = torch.Generator().manual_seed(2)
    finished: dict[int, Exception | None] = {}
    while not finished:
        backend.generate(torch.randint(0, 2048, (3, 8), generator=generator))
        finished = backend.prefill(3.0)
    assert finished == {1: None, 2: None} and backend.prefixes.misses == 2
    assert backend.begin_join(2, reference_call)  # cached now: ready at once
    assert torch.equal(step_reference(backend, 1, golden, lambda i: None), golden["lm16_tokens"][0])


def test_a_call_that_leaves_while_its_persona_is_prefilled_is_not_started(models, reference_call):
    backend = paced(ModelBackend(*models, num_slots=2))
    assert not backend.begin_join(1, reference_call)
    backend.prefill(3.0)
    backend.leave(1)
    finished: dict[int, Exception | None] = {}
    for _ in range(reference_call.prompt.frames):
        finished.update(backend.prefill(3.0))
    assert finished == {} and len(backend.prefixes) == 1  # the prefill went on: the persona is cached


def test_a_step_given_prefill_time_reports_the_join_it_finished(models, reference_call):
    backend = paced(ModelBackend(*models, num_slots=2))
    assert not backend.begin_join(1, reference_call)
    pcm, idle = torch.zeros(2, 1920), torch.tensor([True, False])
    steps = -(-(reference_call.prompt.frames - 1) // 8)  # 8 prompt steps behind each step
    joined = [backend.step(pcm, idle, prefill_seconds=8.0).joined for _ in range(steps)]
    assert joined == [{}] * (steps - 1) + [{1: None}]


def test_a_prefill_interrupted_by_a_one_pass_join_starts_again_and_matches_the_reference(models, golden,
                                                                                      reference_call):
    backend = paced(ModelBackend(*models, num_slots=3))
    assert not backend.begin_join(1, reference_call)
    backend.prefill(4.0)  # a chunk of the reference persona in the scratch row
    backend.join(0, CallSetup(prompt=PersonaPrompt(voice=None, text_tokens=(7, 8, 9)), seed=1))  # takes the row
    finished: dict[int, Exception | None] = {}
    while not finished:
        finished = backend.prefill(4.0)
    assert finished == {1: None}
    assert torch.equal(step_reference(backend, 1, golden, lambda i: None), golden["lm16_tokens"][0])
