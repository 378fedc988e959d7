"""Reading any audio file as mono float32 at a given rate (PyAV decodes and resamples), writing WAV."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np


class AudioFileError(Exception):
    """An audio file that cannot be read; the message is one line."""


def read_audio(path: Path, rate: int) -> np.ndarray:
    """All of `path` as mono float32 samples in [-1, 1] at `rate` Hz: any format FFmpeg reads."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioFileError(f"{path}: no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = []
            for frame in container.decode(audio=0):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise AudioFileError(f"{path}: not a readable audio file ({error})") from error
    if not chunks:
        raise AudioFileError(f"{path}: no audio samples")
    return np.concatenate(chunks).astype(np.float32)


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    """Mono 16-bit PCM WAV."""
    samples = (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
