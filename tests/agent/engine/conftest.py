"""The tiny reference model and its recorded call, shared by the engine's tests (greedy, float32, CPU)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from agent.engine.backend import CallSetup, SamplingSettings
from agent.engine.prefix import PersonaPrompt
from agent.model.checkpoint import load_lm
from agent.model.lm import LMConfig
from agent.model.mimi import Mimi, MimiConfig

GREEDY = SamplingSettings(text_temperature=0, text_top_k=0, audio_temperature=0, audio_top_k=0)


@pytest.fixture(scope="module")
def models(reference_dir):
    """Mimi and the LM (lm16) of the reference, in float32."""
    config = json.loads((reference_dir / "config.json").read_text())
    mimi = Mimi.from_safetensors(reference_dir / "mimi.safetensors", MimiConfig.from_upstream(config["mimi"]))
    lm = load_lm(reference_dir / "lm16.safetensors", LMConfig.from_upstream(config["lm"]), dtype=torch.float32)
    return mimi, lm


@pytest.fixture(scope="module")
def golden(reference_dir):
    return load_file(reference_dir / "lm_golden.safetensors")


@pytest.fixture(scope="module")
def reference_call(reference_dir, golden):
    """The reference session's persona prompt (its voice codes and role), decoded greedily."""
    scenario = json.loads((reference_dir / "scenario.json").read_text())
    prompt = PersonaPrompt(voice=golden["voice_codes"][0], text_tokens=tuple(scenario["text_prompt_tokens"]),
                           silence_frames=scenario["silence_frames"])
    return CallSetup(prompt=prompt, sampling=GREEDY)
