"""Offline evaluation: a WAV of a caller in, the agent's audio and timed words out.

The input streams through the same engine a live call uses (one slot, frame by frame, as fast
as the model goes), so what comes out is what a caller would have heard.
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
from agent.model.loading import Models
from agent.prompts import PromptBuilder
from agent.transcript import TranscriptBuilder
from personas.loader import load_persona

log = logging.getLogger(__name__)


@dataclass
class OfflineResult:
    seconds: float
    words: int


def run_offline(models: Models, persona_file: Path, input_file: Path, output_file: Path,
                transcript_file: Path | None, voices_dir: Path, cache_dir: Path,
                seed: int | None = None, progress: bool = True) -> OfflineResult:
    persona = load_persona(persona_file)
    caller = read_audio(input_file, SAMPLE_RATE)
    call = PromptBuilder(models, voices_dir, cache_dir).call(persona, seed)

    backend = ModelBackend(models.mimi, models.lm, num_slots=1)
    backend.join(0, call)
    frames = -(-caller.size // FRAME_SIZE)
    padded = np.zeros(frames * FRAME_SIZE, dtype=np.float32)
    padded[:caller.size] = caller
    transcript = TranscriptBuilder(models.tokenizer, FRAME_SIZE / SAMPLE_RATE)
    agent, active = [], torch.ones(1, dtype=torch.bool)
    for i in tqdm(range(frames), desc="offline", unit="frame", disable=not progress):
        out = backend.step(torch.from_numpy(padded[i * FRAME_SIZE:(i + 1) * FRAME_SIZE])[None], active)
        agent.append(out.pcm[0].numpy() if out.ready[0] else np.zeros(FRAME_SIZE, np.float32))
        transcript.add(i, int(out.text[0]))

    write_wav(output_file, np.concatenate(agent)[:caller.size], SAMPLE_RATE)
    if transcript_file is not None:
        transcript_file.write_text(json.dumps({
            "model": models.name,
            "persona": str(persona_file),
            "seconds": round(caller.size / SAMPLE_RATE, 3),
            "text": transcript.text,
            "words": transcript.as_json(),
        }, indent=2) + "\n")
    return OfflineResult(seconds=caller.size / SAMPLE_RATE, words=len(transcript.words))
