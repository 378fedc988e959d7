"""Offline evaluation: a WAV of a caller in, the agent's audio and timed words out.

The input streams through the same engine a live call uses (one slot, frame by frame, as fast
as the model goes), so what comes out is what a caller would have heard. With a recogniser the
transcript has both sides: the input as the caller, the output as the agent; the engine then
steps on through the recogniser's delay in silence, so the caller's last words come out too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agent.audio_file import read_audio, write_wav
from agent.contracts.audio import FRAME_SIZE, SAMPLE_RATE
from agent.engine.engine import ModelBackend
from agent.engine.stt import RecognisingBackend, SttBackend
from agent.model.loading import Models
from agent.model.stt_loading import SttModels
from agent.model.stt_words import Word, WordTimer
from agent.prompts import PromptBuilder
from agent.transcript import TranscriptBuilder
from personas.loader import load_persona

log = logging.getLogger(__name__)


@dataclass
class OfflineResult:
    seconds: float
    words: int
    caller_words: int = 0


def run_offline(models: Models, persona_file: Path, input_file: Path, output_file: Path,
                transcript_file: Path | None, voices_dir: Path, cache_dir: Path,
                seed: int | None = None, progress: bool = True, recogniser: SttModels | None = None) -> OfflineResult:
    """`recogniser` (its Mimi is the agent's: load `models` with 32 codebooks) adds the caller's words."""
    persona = load_persona(persona_file)
    caller = read_audio(input_file, SAMPLE_RATE)
    call = PromptBuilder(models, voices_dir, cache_dir).call(persona, seed)

    backend = ModelBackend(models.mimi, models.lm, num_slots=1)
    caller_words = None
    if recogniser is not None:
        backend = RecognisingBackend(backend, SttBackend(recogniser.lm, num_slots=1))
        caller_words = WordTimer(recogniser.tokenizer, recogniser.config)
    backend.join(0, call)
    frames = -(-caller.size // FRAME_SIZE)
    flush = recogniser.config.delay_frames if recogniser is not None else 0
    padded = np.zeros((frames + flush) * FRAME_SIZE, dtype=np.float32)
    padded[:caller.size] = caller
    transcript = TranscriptBuilder(models.tokenizer, FRAME_SIZE / SAMPLE_RATE)
    heard: list[Word] = []
    agent, active = [], torch.ones(1, dtype=torch.bool)
    for i in tqdm(range(frames + flush), desc="offline", unit="frame", disable=not progress):
        out = backend.step(torch.from_numpy(padded[i * FRAME_SIZE:(i + 1) * FRAME_SIZE])[None], active)
        if caller_words is not None:
            heard += filter(None, [caller_words.push(int(out.caller_text[0]))])
        if i >= frames:
            continue  # the recogniser's flush: the agent's audio ends with the input
        agent.append(out.pcm[0].numpy() if out.ready[0] else np.zeros(FRAME_SIZE, np.float32))
        transcript.add(i, int(out.text[0]))
    if caller_words is not None:
        heard += filter(None, [caller_words.flush()])

    write_wav(output_file, np.concatenate(agent)[:caller.size], SAMPLE_RATE)
    if transcript_file is not None:
        result = {
            "model": models.name,
            "persona": str(persona_file),
            "seconds": round(caller.size / SAMPLE_RATE, 3),
            "text": transcript.text,
            "words": transcript.as_json(),
        }
        if recogniser is not None:
            end = round(caller.size / SAMPLE_RATE, 3)  # the flush rounds the delay up to whole frames
            result["caller"] = {"model": recogniser.name, "text": " ".join(w.text for w in heard),
                                "words": [{"text": w.text, "start": min(w.start, end), "end": min(w.end, end)}
                                          for w in heard]}
        transcript_file.write_text(json.dumps(result, indent=2) + "\n")
    return OfflineResult(seconds=caller.size / SAMPLE_RATE, words=len(transcript.words), caller_words=len(heard))
