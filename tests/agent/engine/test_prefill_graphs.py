"""Prefill chunks replayed as CUDA graphs (run on a CUDA machine; skipped elsewhere): the same prefix
as the eager forwards, bit for bit, and a chunk launched behind a running step returns at once."""

import time

import pytest
import torch

from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrefill, PersonaPrompt
from agent.engine.scratch import PrefillScratch
from voices.prompt import load_voice_prompt

pytestmark = [pytest.mark.reference, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SPIN_CYCLES = 500_000_000  # about a quarter of a second of device work: a running step


@pytest.fixture(scope="module")
def backend(models):
    mimi, lm = models
    backend = ModelBackend(mimi.cuda(), lm.cuda(), num_slots=2)
    backend.warm_up()
    return backend


@pytest.mark.parametrize("stored_voice", [False, True])
def test_a_graphed_prefill_equals_the_eager_forwards_of_the_same_chunks(backend, reference_dir, reference_call,
                                                                       stored_voice):
    voice = load_voice_prompt(reference_dir / "voice.pt") if stored_voice else reference_call.prompt.voice
    prompt = PersonaPrompt(voice=voice, text_tokens=reference_call.prompt.text_tokens)
    assert backend.scratch.lengths[-1] == 1 and len(backend.scratch.lengths) > 3
    graphed, chunks = PersonaPrefill(backend.scratch, prompt), []
    while not graphed.done:
        chunks.append(graphed.advance(prompt.frames))
    assert set(chunks) <= set(backend.scratch.lengths)  # each chunk a graph's replay
    eager = PersonaPrefill(PrefillScratch(backend.stream), prompt)
    for steps in chunks:
        eager.advance(steps)
    a, b = graphed.prefix(), eager.prefix()
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.provided, b.provided)
    for x, y in zip((*a.keys, *a.values), (*b.keys, *b.values)):
        assert torch.equal(x, y)


def test_a_chunk_behind_a_running_step_does_not_hold_the_host(backend, reference_call):
    torch.cuda.synchronize()
    prefill = PersonaPrefill(backend.scratch, reference_call.prompt)
    torch.cuda._sleep(SPIN_CYCLES)
    start = time.perf_counter()
    prefill.advance(backend.scratch.lengths[0])
    launched = time.perf_counter() - start
    torch.cuda.synchronize()
    waited = time.perf_counter() - start
    assert launched < 0.05 < waited, (launched, waited)
