"""The engine with an FP8 KV ring and FP8 weights: slots stay independent and prefixes restore exactly."""

import json

import pytest
import torch

from agent.engine.backend import CallSetup, SamplingSettings
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrompt
from agent.model.checkpoint import load_lm
from agent.model.lm import LMConfig
from agent.model.mimi import Mimi, MimiConfig

GREEDY = SamplingSettings(text_temperature=0, text_top_k=0, audio_temperature=0, audio_top_k=0)


@pytest.fixture(scope="module")
def fp8_backend_parts(reference_dir, golden, reference_call):
    config = json.loads((reference_dir / "config.json").read_text())
    mimi = Mimi.from_safetensors(reference_dir / "mimi.safetensors", MimiConfig.from_upstream(config["mimi"]))
    lm = load_lm(reference_dir / "lm16.safetensors", LMConfig.from_upstream(config["lm"]), dtype=torch.float32)
    lm.to_fp8_weights()  # a model of its own: the shared one stays in float32
    return mimi, lm, golden["user_codes"][0], reference_call


def conversation(backend: ModelBackend, slot: int, user: torch.Tensor) -> torch.Tensor:
    """The reference caller's codes in `slot`, random codes in the others: the slot's tokens [17, T]."""
    generator = torch.Generator().manual_seed(0)
    tokens = []
    for i in range(user.shape[1]):
        codes = torch.randint(0, 2048, (backend.num_slots, 8), generator=generator)
        codes[slot] = user[:, i]
        out, _ = backend.generate(codes)
        tokens.append(out[slot])
    return torch.stack(tokens, dim=1)


def test_an_fp8_slot_beside_busy_slots_matches_it_alone(fp8_backend_parts):
    mimi, lm, user, call = fp8_backend_parts
    alone = ModelBackend(mimi, lm, num_slots=1, kv_dtype="fp8")
    alone.join(0, call)
    expected = conversation(alone, 0, user)

    crowded = ModelBackend(mimi, lm, num_slots=4, kv_dtype="fp8")
    for slot, role in ((0, (5, 6, 7)), (1, (8, 9)), (3, (10,))):
        crowded.join(slot, CallSetup(prompt=PersonaPrompt(voice=None, text_tokens=role), seed=slot))
    crowded.join(2, call)  # its prefix prefilled in a scratch FP8 ring, then restored into row 2
    assert crowded.lm_state.transformer.caches[0].k.dtype == torch.float8_e4m3fn
    assert torch.equal(conversation(crowded, 2, user), expected)
