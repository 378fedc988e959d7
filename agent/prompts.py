"""A persona (role text and voice) made into the prompt a call starts from.

A WAV voice is made into a stored voice once (the catalog keeps it by the file's hash): the audio is
read and normalised here, and its encoding (`agent.engine.voice`) is run by `make_voice`: in a
worker, its engine between steps; elsewhere, at once.
"""

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
from agent.engine.voice import MakeVoice, VoiceEncoding
from agent.model.loading import Models, model_cache_key
from agent.model.stream import StreamingLM
from personas.schema import Persona
from voices.catalog import VoiceCatalog, VoiceError
from voices.prompt import VoicePrompt

log = logging.getLogger(__name__)

VOICE_LOUDNESS_LUFS = -24.0  # upstream normalises a voice WAV to this before encoding it


class PromptBuilder:
    def __init__(self, models: Models, voices_dir: Path, cache_dir: Path, make_voice: MakeVoice = VoiceEncoding.run):
        self.models = models
        self.make_voice = make_voice
        self.catalog = VoiceCatalog(
            voices_dir, cache_dir / model_cache_key(models) / "voices",
            released_archive=models.voices_archive, make_voice_prompt=self._voice_from_wav,
            dim=models.lm.config.dim, num_codebooks=models.lm.config.num_streams,
        )

    def prompt(self, persona: Persona) -> PersonaPrompt:
        tokens = tuple(self.models.tokenizer.encode_role(persona.role))
        if self.models.dummy and not persona.voice.endswith(".wav"):  # it has no released voices, others are another model's
            log.warning("dummy model: the persona's voice is not used", extra={"voice": persona.voice})
            return PersonaPrompt(voice=None, text_tokens=tokens)
        voice = self.catalog.load(persona.voice)
        return PersonaPrompt(voice=voice, text_tokens=tokens)

    def prepare(self, voice: str) -> None:
        """Make `voice` ready before a call needs it: a WAV's stored voice made now, if not made yet."""
        self.catalog.resolve(voice)

    def call(self, persona: Persona, seed: int | None = None) -> CallSetup:
        """The setup of a call on this persona: its prompt, sampling and seed."""
        s = persona.sampling
        sampling = SamplingSettings(s.text.temperature, s.text.top_k, s.audio.temperature, s.audio.top_k)
        seed = seed if seed is not None else s.seed if s.seed is not None else 0
        return CallSetup(prompt=self.prompt(persona), sampling=sampling, seed=seed,
                         keep_persona=persona.keep_persona)

    def _voice_from_wav(self, wav: Path) -> VoicePrompt:
        """Upstream's voice file for a WAV: Mimi codes of the loudness-normalised audio, stepped by the LM."""
        encoding = VoiceEncoding(self.models.mimi, StreamingLM(self.models.lm), voice_pcm(wav), str(wav))
        return self.make_voice(encoding)


def voice_pcm(wav: Path) -> torch.Tensor:
    """A voice recording [1, 1, F * FRAME_SIZE] at -24 LUFS, its last frame padded with silence, on the CPU."""
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
    return padded
