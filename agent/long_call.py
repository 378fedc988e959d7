"""`plexline eval long-call`: does a call longer than the model's context keep its persona?

One long call (a caller WAV, or a generated caller) streams through the engine once per way of
keeping the persona (`keep_persona` pinned, then window: upstream's ring). Each period (a minute
by default) is compared with a fresh session of the same persona that joined `recent` seconds
before the period and heard the same caller audio since: the agent the persona should give
given what was said lately, with its whole prompt in view. Reported per period and setting:

- text agreement: of the frames where either session writes a word (not padding), the share
  where both write the same text token (greedy decoding, so the sessions are deterministic);
- speaker similarity: the cosine of the agent's audio in the period to the voice prompt, both as
  the mean of Mimi's acoustic latents (codebooks after the first, which is distilled to carry
  meaning, not voice); where the voice is no WAV (a stored .pt voice, a dummy model), the
  reference is the fresh session's audio of the first period;
- step time: the median of the engine's whole step (the long call and its fresh sessions).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agent.audio_file import read_audio
from agent.contracts.audio import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE
from agent.engine.backend import CallSetup, KeepPersona, SamplingSettings
from agent.engine.engine import ModelBackend
from agent.model.lm import NO_TOKEN
from agent.model.loading import Models
from agent.prompts import PromptBuilder
from personas.loader import load_persona
from personas.schema import Persona
from voices.released import RELEASED_VOICES

GREEDY = SamplingSettings(text_temperature=0, text_top_k=0, audio_temperature=0, audio_top_k=0)
SPECIAL_TEXT_TOKENS = 4  # PersonaPlex's ids 0..3: EPAD, BOS, EOS, PAD; none is a word
SETTINGS: tuple[KeepPersona, ...] = ("pinned", "window")


@dataclass
class PeriodResult:
    period: int
    text_agreement: float | None  # None: neither session wrote a word in the period
    speaker_similarity: float
    step_ms: float


@dataclass
class LongCallResult:
    model: str
    persona: str
    seconds: float
    period_seconds: float
    recent_seconds: float
    context_seconds: float
    prompt_frames: int
    speaker_reference: str  # "voice prompt" or "first period of a fresh session"
    settings: dict[str, list[PeriodResult]] = field(default_factory=dict)


def generated_caller(seconds: float, seed: int = 0) -> np.ndarray:
    """A caller that talks and pauses: voiced spurts of 1-4 s (a gliding pitch of 90-220 Hz and
    its harmonics, syllable-rate amplitude) between pauses of 0.5-2.5 s, float32 at 24 kHz."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SAMPLE_RATE)
    pcm = np.zeros(total, dtype=np.float32)
    start = int(rng.uniform(0.5, 2.0) * SAMPLE_RATE)
    while start < total:
        length = min(int(rng.uniform(1.0, 4.0) * SAMPLE_RATE), total - start)
        t = np.arange(length) / SAMPLE_RATE
        pitch = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
        syllables = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(3, 5) * t))
        pcm[start:start + length] = 0.1 * voiced * syllables
        start += length + int(rng.uniform(0.5, 2.5) * SAMPLE_RATE)
    return pcm


def run_long_call(models: Models, persona_file: Path, caller: np.ndarray, voices_dir: Path, cache_dir: Path,
                  period_seconds: float = 60.0, recent_seconds: float = 60.0,
                  progress=print) -> LongCallResult:
    persona = load_persona(persona_file)
    call = dataclasses.replace(PromptBuilder(models, voices_dir, cache_dir).call(persona), sampling=GREEDY)
    context = models.lm.config.context
    period, recent = round(period_seconds / FRAME_SECONDS), round(recent_seconds / FRAME_SECONDS)
    if call.prompt.frames + recent + period >= context:
        raise ValueError(f"a fresh session ({call.prompt.frames} prompt frames, {recent} recent, {period} "
                         f"compared) must fit the {context}-frame context: shorten --recent or the period")
    frames = -(-caller.size // FRAME_SIZE)
    padded = np.zeros(frames * FRAME_SIZE, dtype=np.float32)
    padded[:caller.size] = caller
    pcm = torch.from_numpy(padded).view(frames, FRAME_SIZE)

    runs = {setting: _run(models, call, setting, pcm, period, recent, progress) for setting in SETTINGS}
    voice = _voice_wav(persona, voices_dir)
    if voice is not None:
        reference, reference_name = _acoustic_embedding(models, read_audio(voice, SAMPLE_RATE)), "voice prompt"
    else:
        first_fresh = runs["window"].fresh_audio[0]
        reference, reference_name = _acoustic_embedding(models, first_fresh), "first period of a fresh session"
    result = LongCallResult(model=models.name, persona=str(persona_file), seconds=caller.size / SAMPLE_RATE,
                            period_seconds=period * FRAME_SECONDS, recent_seconds=recent * FRAME_SECONDS,
                            context_seconds=context * FRAME_SECONDS, prompt_frames=call.prompt.frames,
                            speaker_reference=reference_name)
    for setting, run in runs.items():
        rows = []
        for index in range(-(-frames // period)):
            span = slice(index * period, min(frames, (index + 1) * period))
            audio = run.agent_audio[span].reshape(-1)
            similarity = float(torch.cosine_similarity(_acoustic_embedding(models, audio), reference, dim=0))
            rows.append(PeriodResult(index, _agreement(run.text[span], run.fresh_text[span]), similarity,
                                     float(np.median(run.step_ms[span]))))
        result.settings[setting] = rows
    return result


@dataclass
class _Run:
    text: np.ndarray  # [frames] the long call's text tokens
    fresh_text: np.ndarray  # [frames] the text of the fresh session compared in each frame's period
    agent_audio: np.ndarray  # [frames, FRAME_SIZE]
    fresh_audio: list[np.ndarray]  # per period, the compared fresh session's agent audio
    step_ms: np.ndarray  # [frames]


def _run(models: Models, call: CallSetup, setting: KeepPersona, pcm: torch.Tensor, period: int, recent: int,
         progress) -> _Run:
    """Stream the call in slot 0 and, in the other slots, each period's fresh session (a window
    call: it never outlasts the context)."""
    frames = pcm.shape[0]
    fresh_slots = -(-(recent + period) // period)
    backend = ModelBackend(models.mimi, models.lm, num_slots=1 + fresh_slots, pin_personas=setting == "pinned")
    backend.warm_up()
    backend.join(0, dataclasses.replace(call, keep_persona=setting))
    window_call = dataclasses.replace(call, keep_persona="window")
    periods = -(-frames // period)
    starts: dict[int, list[int]] = {}  # frame -> the periods whose fresh session joins there
    for index in range(periods):
        starts.setdefault(max(0, index * period - recent), []).append(index)
    slot_of: dict[int, int] = {}  # period -> its fresh session's slot
    text = np.full(frames, NO_TOKEN)
    fresh_text = np.full(frames, NO_TOKEN)
    agent_audio = np.zeros((frames, FRAME_SIZE), dtype=np.float32)
    fresh_audio: list[list[np.ndarray]] = [[] for _ in range(periods)]
    step_ms = np.zeros(frames)
    active = torch.ones(backend.num_slots, dtype=torch.bool)
    for i in range(frames):
        for index in starts.get(i, ()):
            slot_of[index] = 1 + index % fresh_slots
            backend.join(slot_of[index], window_call)
        start = time.perf_counter()
        out = backend.step(pcm[i].expand(backend.num_slots, FRAME_SIZE).contiguous(), active)
        step_ms[i] = (time.perf_counter() - start) * 1000
        compared = slot_of[i // period]
        text[i] = out.text[0] if out.ready[0] else NO_TOKEN
        fresh_text[i] = out.text[compared] if out.ready[compared] else NO_TOKEN
        agent_audio[i] = out.pcm[0].numpy() if out.ready[0] else 0.0
        silence = np.zeros(FRAME_SIZE, np.float32)
        fresh_audio[i // period].append(out.pcm[compared].numpy() if out.ready[compared] else silence)
        if (i + 1) % period == 0:
            progress(f"{setting}: {(i + 1) * FRAME_SECONDS:.0f} s of {frames * FRAME_SECONDS:.0f}")
    return _Run(text, fresh_text, agent_audio, [np.concatenate(audio) for audio in fresh_audio], step_ms)


def _agreement(text: np.ndarray, fresh_text: np.ndarray) -> float | None:
    both = (text != NO_TOKEN) & (fresh_text != NO_TOKEN)
    words = both & ((text >= SPECIAL_TEXT_TOKENS) | (fresh_text >= SPECIAL_TEXT_TOKENS))
    if not words.any():
        return None
    return float((text[words] == fresh_text[words]).mean())


@torch.no_grad()
def _acoustic_embedding(models: Models, audio: np.ndarray) -> torch.Tensor:
    """The mean of Mimi's acoustic latent (codebooks 2..) over the audio: a voice, roughly, [dim]."""
    mimi = models.mimi
    frames = max(1, math.ceil(audio.size / FRAME_SIZE))
    padded = torch.zeros(1, 1, frames * FRAME_SIZE)
    padded[0, 0, :audio.size] = torch.from_numpy(audio)
    device = next(mimi.parameters()).device
    codes = mimi.encode(padded.to(device))  # [1, codebooks, frames]
    latent = mimi.quantizer.rvq_rest.decode(codes[:, 1:])  # [1, dim, frames]
    return latent[0].float().mean(dim=-1).cpu()


def _voice_wav(persona: Persona, voices_dir: Path) -> Path | None:
    if persona.voice in RELEASED_VOICES or not persona.voice.endswith(".wav"):
        return None
    return voices_dir / persona.voice


def table(result: LongCallResult) -> str:
    lines = [(f"{result.model}, {result.persona}: {result.seconds:.0f} s call, "
              f"context {result.context_seconds:.0f} s, prompt {result.prompt_frames} frames, fresh sessions from "
              f"{result.recent_seconds:.0f} s before each {result.period_seconds:.0f} s period; "
              f"speaker reference: {result.speaker_reference}"),
             "period | " + " | ".join(f"{s}: text agr, speaker sim, step ms" for s in result.settings)]
    periods = len(next(iter(result.settings.values())))
    for index in range(periods):
        cells = []
        for rows in result.settings.values():
            r = rows[index]
            agreement = "   -" if r.text_agreement is None else f"{r.text_agreement:.2f}"
            cells.append(f"{agreement:>25}, {r.speaker_similarity:>11.3f}, {r.step_ms:>7.1f}")
        lines.append(f"{index:>6} | " + " | ".join(cells))
    return "\n".join(lines)
