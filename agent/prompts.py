"""A persona (role text and voice) made into the prompt a call starts from."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyloudnorm
import torch

from agent.audio_file import read_audio
from agent.contracts.audio import FRAME_SIZE, SAMPLE_RATE
from agent.engine.backend import CallSetup, SamplingSettings
from agent.engine.prefix import PersonaPrompt
from agent.model.loading import Models, model_cache_key
from agent.model.mimi import Mimi
from agent.model.persona_prompt import voice_prompt_from_codes
from agent.model.stream import StreamingLM
from personas.schema import Persona
from voices.catalog import VoiceCatalog, VoiceError
from voices.prompt import VoicePrompt

log = logging.getLogger(__name__)

VOICE_LOUDNESS_LUFS = -24.0  # upstream normalises a voice WAV to this before encoding it


class PromptBuilder:
    def __init__(self, models: Models, voices_dir: Path, cache_dir: Path):
        self.models = models
        self.catalog = VoiceCatalog(
            voices_dir, cache_dir / model_cache_key(models) / "voices",
            released_archive=models.voices_archive, make_voice_prompt=self._voice_from_wav,
            dim=models.lm.config.dim, num_codebooks=models.lm.config.num_streams,
        )

    def prompt(self, persona: Persona) -> PersonaPrompt:
        tokens = tuple(self.models.tokenizer.encode_role(persona.role))
        if self.models.dummy:
            log.warning("dummy model: the persona's voice is not used", extra={"voice": persona.voice})
            return PersonaPrompt(voice=None, text_tokens=tokens)
        voice = self.catalog.load(persona.voice)
        return PersonaPrompt(voice=voice, text_tokens=tokens)

    def call(self, persona: Persona, seed: int | None = None) -> CallSetup:
        """The setup of a call on this persona: its prompt, sampling and seed."""
        s = persona.sampling
        sampling = SamplingSettings(s.text.temperature, s.text.top_k, s.audio.temperature, s.audio.top_k)
        seed = seed if seed is not None else s.seed if s.seed is not None else 0
        return CallSetup(prompt=self.prompt(persona), sampling=sampling, seed=seed,
                         keep_persona=persona.keep_persona)

    def _voice_from_wav(self, wav: Path) -> VoicePrompt:
        """Upstream's voice file for a WAV: Mimi codes of the loudness-normalised audio, stepped by the LM."""
        return voice_prompt_from_codes(StreamingLM(self.models.lm), voice_codes(self.models.mimi, wav), str(wav))


def voice_codes(mimi: Mimi, wav: Path) -> torch.Tensor:
    """Mimi codes [8, F] of a voice recording at -24 LUFS, its last frame padded with silence."""
    pcm = read_audio(wav, SAMPLE_RATE).astype(np.float64)
    try:
        loudness = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(pcm)
    except ValueError as error:  # shorter than one 400 ms measurement block
        raise VoiceError(f"{wav}: too short for a voice prompt ({error})") from error
    if not np.isfinite(loudness):
        raise VoiceError(f"{wav}: silent, not a voice prompt")
    pcm = pyloudnorm.normalize.loudness(pcm, loudness, VOICE_LOUDNESS_LUFS).astype(np.float32)
    frames = -(-pcm.size // FRAME_SIZE)
    padded = torch.zeros(1, 1, frames * FRAME_SIZE)
    padded[0, 0, :pcm.size] = torch.from_numpy(pcm)
    device = next(mimi.parameters()).device
    return mimi.encode(padded.to(device))[0]
