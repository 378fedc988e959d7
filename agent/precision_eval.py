"""`plexline eval precision`: how far the 8-bit settings move a conversation from bf16.

A caller's WAV streams through the engine (one slot, as `plexline offline` does) once per
precision: bf16 weights and ring, the FP8 KV ring, FP8 weights, both. Every run has the same
persona, seed and so the same sampling noise, so any difference is the precision's. Against the
bf16 run each reports the share of frames whose text token is the same, the first frame where
they differ (after it the two conversations drift apart, as two samples would), and the agent's
audio: the waveform's relative difference and the mean log-spectral distance in dB.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from agent.audio_file import read_audio
from agent.contracts.audio import FRAME_SIZE, SAMPLE_RATE
from agent.engine.backend import CallSetup
from agent.engine.engine import ModelBackend
from agent.model.loading import Models
from agent.prompts import PromptBuilder
from personas.loader import load_persona

PRECISIONS = (("bf16", "bf16"), ("bf16", "fp8"), ("fp8", "bf16"), ("fp8", "fp8"))  # (weights, KV ring)


@dataclass
class Run:
    text: np.ndarray  # [frames] the agent's text token of each frame, -1 before the first output
    audio: np.ndarray  # [samples] float32 at 24 kHz


@dataclass
class PrecisionResult:
    weights: str
    kv_dtype: str
    text_agreement: float  # share of the frames with output whose text token equals bf16's
    first_difference_s: float | None  # when the text first differs; None if never
    audio_relative_difference: float  # ||audio - bf16|| / ||bf16||
    log_spectral_distance_db: float  # mean |20 log10 |STFT| - bf16's| over frames and bins


@dataclass
class PrecisionReport:
    model: str
    persona: str
    seconds: float
    results: list[PrecisionResult]


def run_call(models: Models, call: CallSetup, caller: np.ndarray, kv_dtype: str) -> Run:
    backend = ModelBackend(models.mimi, models.lm, num_slots=1, kv_dtype=kv_dtype)
    backend.warm_up()
    backend.join(0, call)
    frames = -(-caller.size // FRAME_SIZE)
    padded = np.zeros(frames * FRAME_SIZE, dtype=np.float32)
    padded[:caller.size] = caller
    text, audio, active = [], [], torch.ones(1, dtype=torch.bool)
    for i in range(frames):
        out = backend.step(torch.from_numpy(padded[i * FRAME_SIZE:(i + 1) * FRAME_SIZE])[None], active)
        text.append(int(out.text[0]) if out.ready[0] else -1)
        audio.append(out.pcm[0].numpy() if out.ready[0] else np.zeros(FRAME_SIZE, np.float32))
    return Run(np.array(text), np.concatenate(audio)[:caller.size])


def log_spectrum_db(audio: np.ndarray, window: int = 1024, hop: int = 256) -> np.ndarray:
    stft = torch.stft(torch.from_numpy(audio), window, hop, window=torch.hann_window(window), return_complex=True)
    return 20 * torch.log10(stft.abs().clamp(min=1e-5)).numpy()


def compare(run: Run, reference: Run, weights: str, kv_dtype: str) -> PrecisionResult:
    valid = (run.text >= 0) & (reference.text >= 0)
    differs = np.flatnonzero(valid & (run.text != reference.text))
    norm = float(np.linalg.norm(reference.audio)) or 1.0
    return PrecisionResult(
        weights=weights, kv_dtype=kv_dtype,
        text_agreement=float((run.text == reference.text)[valid].mean()) if valid.any() else 1.0,
        first_difference_s=round(float(differs[0]) * FRAME_SIZE / SAMPLE_RATE, 2) if differs.size else None,
        audio_relative_difference=float(np.linalg.norm(run.audio - reference.audio)) / norm,
        log_spectral_distance_db=float(np.abs(log_spectrum_db(run.audio) - log_spectrum_db(reference.audio)).mean()),
    )


def compare_precisions(models: Models, persona_file: Path, input_file: Path, voices_dir: Path, cache_dir: Path,
                       seed: int = 0, seconds: float | None = None, progress=print) -> PrecisionReport:
    """Every precision of PRECISIONS against bf16. `models` must hold bf16 weights: they are
    quantised to FP8 in place halfway, so the model is loaded once."""
    if models.weights != "bf16":
        raise ValueError("the comparison starts from bf16 weights")
    caller = read_audio(input_file, SAMPLE_RATE)
    if seconds is not None:
        caller = caller[:int(seconds * SAMPLE_RATE)]
    call = PromptBuilder(models, voices_dir, cache_dir).call(load_persona(persona_file), seed)
    runs = {}
    for weights, kv_dtype in PRECISIONS:
        if weights == "fp8" and models.weights == "bf16":
            models.lm.to_fp8_weights()
            models.weights = "fp8"
        runs[weights, kv_dtype] = run_call(models, call, caller, kv_dtype)
        progress(f"ran weights {weights}, KV {kv_dtype}")
    reference = runs["bf16", "bf16"]
    return PrecisionReport(model=models.name, persona=str(persona_file), seconds=round(caller.size / SAMPLE_RATE, 2),
                           results=[compare(run, reference, *key) for key, run in runs.items()])


def table(report: PrecisionReport) -> str:
    lines = [f"{report.model}, {report.persona}, {report.seconds:.1f} s of caller audio; against bf16:",
             "weights | KV   | text tokens equal | first differs s | audio rel. diff | log-spectral dist. dB"]
    for r in report.results:
        first = "never" if r.first_difference_s is None else f"{r.first_difference_s:.2f}"
        lines.append(f"{r.weights:<7} | {r.kv_dtype:<4} | {r.text_agreement:>17.3f} | {first:>15} | "
                     f"{r.audio_relative_difference:>15.3f} | {r.log_spectral_distance_db:>21.2f}")
    return "\n".join(lines)


def write_json(report: PrecisionReport, path: Path) -> None:
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")
