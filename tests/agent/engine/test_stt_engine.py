"""The recogniser's engine: each slot as Kyutai's implementation alone, whoever joins and leaves beside it."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from agent.engine.backend import CallSetup
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrompt
from agent.engine.stt import RecognisingBackend, SttBackend
from agent.model.checkpoint import dummy_lm
from agent.model.lm import LMConfig
from agent.model.loading import load_models
from agent.model.mimi import Mimi, MimiConfig
from agent.model.stt import SttConfig
from agent.model.stt_loading import dummy_stt_lm, load_stt, load_stt_lm

REFERENCE = Path(__file__).parents[2] / "data" / "stt-tiny"
FRAME = 1920

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(REFERENCE / "golden.safetensors")


@pytest.fixture(scope="module")
def stt():
    return load_stt_lm(REFERENCE / "stt.safetensors", SttConfig.from_json(REFERENCE / "config.json"),
                       dtype=torch.float32)


def reference_mimi(codebooks: int) -> Mimi:
    config = json.loads((REFERENCE / "config.json").read_text())["mimi"]
    return Mimi.from_safetensors(REFERENCE / "mimi.safetensors",
                                 MimiConfig.from_upstream({**config, "num_codebooks": codebooks}))


def test_a_slot_beside_busy_slots_joining_and_leaving_matches_the_reference(stt, golden):
    """Slot 2 runs the reference stream; slot 0 is busy throughout, slot 1 leaves and a new call takes it,
    slot 3 joins late. Every call's tokens are its stream's as if it ran alone."""
    codes = golden["codes"][0]  # [32, T]
    steps = codes.shape[1]
    backend = SttBackend(stt, num_slots=4)
    generator = torch.Generator().manual_seed(3)
    noise = torch.randint(0, stt.config.card, (4, 32, steps), generator=generator)
    for slot in (0, 1, 2):
        backend.join(slot)
    reference, second_call = [], []
    for t in range(steps):
        if t == 20:
            backend.leave(1)
        if t == 25:
            backend.join(1)  # a new call: from here it is fed the reference stream from its start
        if t == 30:
            backend.join(3)
        frame = noise[:, :, t].clone()
        frame[2] = codes[:, t]
        if t >= 25:
            frame[1] = codes[:, t - 25]
        out = backend.step(frame, torch.tensor([True, t < 20 or t >= 25, True, t >= 30]))
        reference.append(out.text[2])
        if t >= 25:
            second_call.append(out.text[1])
    assert torch.equal(torch.stack(reference), golden["text_tokens"][0])
    assert torch.equal(torch.stack(second_call), golden["text_tokens"][0, :len(second_call)])


def test_the_heads_of_a_slot_match_the_reference(stt, golden):
    backend = SttBackend(stt, num_slots=2)
    backend.join(1)
    heads = [backend.step(torch.stack([torch.zeros(32, dtype=torch.long), golden["codes"][0, :, t]]),
                          torch.tensor([False, True])).heads[1] for t in range(golden["codes"].shape[-1])]
    torch.testing.assert_close(torch.stack(heads, dim=1), golden["extra_heads"][0], rtol=0, atol=1e-5)


def agent_backend(mimi: Mimi, num_slots: int) -> ModelBackend:
    return ModelBackend(mimi, dummy_lm(LMConfig.tiny(), dtype=torch.float32), num_slots=num_slots)


def test_the_recogniser_reads_the_agents_one_encode(golden):
    """Caller audio through the agent's engine (its Mimi at 32 codebooks): the recogniser reads the codes
    the agent's step computed, the same as a separate encode of the caller's audio would give it."""
    mimi = Mimi.dummy(dataclasses.replace(MimiConfig.tiny(), total_codebooks=32, num_codebooks=32), seed=2)
    stt = dummy_stt_lm(dataclasses.replace(SttConfig.tiny(), card=mimi.config.codebook_size), dtype=torch.float32)
    agent = agent_backend(mimi, num_slots=2)
    backend = RecognisingBackend(agent, SttBackend(stt, num_slots=2))
    backend.warm_up()
    call = CallSetup(prompt=PersonaPrompt(voice=None, text_tokens=(5, 6, 7)))
    backend.join(0, call)
    backend.join(1, call)
    pcm = golden["pcm_in"][0, 0]
    generator = torch.Generator().manual_seed(4)
    text, codes = [], []
    for frame in pcm.split(FRAME):
        out = backend.step(torch.stack([torch.rand(FRAME, generator=generator) - 0.5, frame]),
                           torch.tensor([True, True]))
        text.append(out.caller_text[1])
        codes.append(agent.caller_codes[1].clone())
    with torch.no_grad():
        alone = mimi.encode(pcm[None, None])[0]  # [32, T]
    assert torch.equal(torch.stack(codes, dim=1), alone)
    recogniser = SttBackend(stt, num_slots=1)
    recogniser.join(0)
    expected = [recogniser.step(alone[None, :, t], torch.tensor([True])).text[0] for t in range(alone.shape[1])]
    assert torch.equal(torch.stack(text), torch.stack(expected))


def test_a_mimi_with_fewer_codebooks_than_the_recogniser_reads_is_refused(stt):
    with pytest.raises(ValueError, match="gives 8 codebooks; the recogniser reads 32"):
        RecognisingBackend(agent_backend(reference_mimi(codebooks=8), num_slots=1), SttBackend(stt, num_slots=1))


def test_the_tiny_dummies_step_together():
    """What a CPU worker with the recogniser on runs: the agent's tiny dummy encoding 32 codebooks."""
    models = load_models("dummy:tiny", device="cpu", mimi_codebooks=32)
    stt = load_stt("dummy:tiny", device="cpu")
    backend = RecognisingBackend(ModelBackend(models.mimi, models.lm, num_slots=2), SttBackend(stt.lm, num_slots=2))
    backend.warm_up()
    backend.join(1, CallSetup(prompt=PersonaPrompt(voice=None, text_tokens=(5, 6))))
    out = backend.step(torch.rand(2, FRAME) - 0.5, torch.tensor([False, True]))
    assert out.caller_text.shape == (2,) and out.caller_heads.shape == (2, 4, 6)
    assert out.ready.tolist() == [False, True]
