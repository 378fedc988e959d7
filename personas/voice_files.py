"""Whether a persona's voice can be used, checked when a line is saved rather than when a call starts.

A released name (NATF2) is always usable: the worker unpacks it from the model's `voices.tgz`. A file
is looked up in the tenant's `voices/` folder (`<tenant>/voices/`, where the workers look when their
voices folder is the tenant folder, the default) and must be a file there that reads as what its
suffix says: a WAV of PCM audio, or a voice prompt (`.pt`, a zip archive as torch saves it). Reading
the `.pt` itself needs torch, which the control plane does not load: the worker checks the tensors.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from voices.released import RELEASED_VOICES

VOICES_FOLDER = "voices"  # beside the tenant's line files
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def voice_problem(voices_folder: Path, voice: str) -> str | None:
    """Why `voice` cannot be used by a call, or None if it can."""
    if voice in RELEASED_VOICES:
        return None
    relative = PurePosixPath(voice)
    if relative.is_absolute() or ".." in relative.parts or "\\" in voice:
        return "a voice file must be a relative path inside the voices folder"
    root = voices_folder.resolve()
    path = (root / relative).resolve()  # follows links: a link must not lead outside either
    if not path.is_relative_to(root):
        return "leads outside the voices folder"
    if not path.is_file():
        return f"no file {voice} in the tenant's {VOICES_FOLDER}/ folder"
    try:
        if path.suffix == ".wav":
            return _wav_problem(path)
        with path.open("rb") as f:
            if f.read(4) != _ZIP_MAGIC:
                return f"{voice} is not a voice prompt (a .pt file saved by torch)"
    except OSError as error:
        return f"cannot read {voice}: {error.strerror}"
    return None


@dataclass(frozen=True)
class WavInfo:
    sample_rate: int
    channels: int
    sample_bits: int
    seconds: float


def wav_info(content: bytes) -> WavInfo:
    """What a PCM WAV file holds; ValueError (one line) if `content` is not one."""
    try:
        with wave.open(io.BytesIO(content), "rb") as f:
            rate, frames = f.getframerate(), f.getnframes()
            return WavInfo(rate, f.getnchannels(), 8 * f.getsampwidth(), frames / rate if rate else 0.0)
    except (wave.Error, EOFError) as error:
        raise ValueError(f"not a PCM WAV file: {error}") from None


def _wav_problem(path: Path) -> str | None:
    try:
        info = wav_info(path.read_bytes())
    except ValueError as error:
        return f"{path.name} is {error}"
    return f"{path.name} holds no audio" if info.seconds == 0 else None
