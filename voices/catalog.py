"""The voice catalog: a persona's `voice` to a voice-prompt file (`.pt`).

- a released name (NATF2): `{name}.pt` from the model's `voices.tgz`, unpacked once into the cache;
- `some/voice.pt` inside the voices folder: used as is;
- `some/voice.wav` inside the voices folder: made into a voice prompt by `make_voice_prompt`
  (Mimi encoding and LM replay, supplied by the model side) and cached under the hash of the
  WAV's bytes, so it is computed once. The cache belongs to one model: give each model its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from voices.archive import VoiceArchiveError, extract_voices
from voices.prompt import VoicePrompt, VoicePromptError, load_voice_prompt
from voices.released import RELEASED_VOICES

MakeVoicePrompt = Callable[[Path], VoicePrompt]  # a WAV replayed through the model (Mimi and the LM)


class VoiceError(Exception):
    """A voice that cannot be resolved or loaded; the message is one line."""


class VoiceCatalog:
    def __init__(
        self,
        voices_dir: Path,
        cache_dir: Path,
        *,
        released_archive: Path | None = None,
        make_voice_prompt: MakeVoicePrompt | None = None,
        dim: int | None = None,
        num_codebooks: int | None = None,
    ):
        self.voices_dir = Path(voices_dir)
        self.cache_dir = Path(cache_dir)
        self.released_archive = released_archive
        self.make_voice_prompt = make_voice_prompt
        self.dim = dim  # expected LM width of the embeddings, if known
        self.num_codebooks = num_codebooks  # expected token-cache rows, if known

    def load(self, voice: str) -> VoicePrompt:
        path = self.resolve(voice)
        try:
            return load_voice_prompt(path, dim=self.dim, num_codebooks=self.num_codebooks)
        except VoicePromptError as error:
            raise VoiceError(str(error)) from error

    def resolve(self, voice: str) -> Path:
        """The `.pt` voice-prompt file for `voice`, made or unpacked if needed."""
        if voice in RELEASED_VOICES:
            return self._released(voice)
        path = self._inside_voices_dir(voice)
        if path.suffix == ".pt":
            return path
        if path.suffix == ".wav":
            return self._from_wav(path)
        raise VoiceError(f"voice {voice}: expected a released voice name, a .pt or a .wav file")

    def _released(self, name: str) -> Path:
        if self.released_archive is None:
            raise VoiceError(f"voice {name}: no voices.tgz given for the released voices")
        try:
            folder = extract_voices(self.released_archive, self.cache_dir / "released")
        except VoiceArchiveError as error:
            raise VoiceError(str(error)) from error
        path = folder / f"{name}.pt"
        if not path.is_file():
            raise VoiceError(f"voice {name}: not in {self.released_archive}")
        return path

    def _inside_voices_dir(self, voice: str) -> Path:
        relative = PurePosixPath(voice)
        if relative.is_absolute() or ".." in relative.parts or "\\" in voice:
            raise VoiceError(f"voice {voice}: must be a relative path inside {self.voices_dir}")
        root = self.voices_dir.resolve()
        path = (root / relative).resolve()  # follows links: a link must not lead outside either
        if not path.is_relative_to(root):
            raise VoiceError(f"voice {voice}: leads outside {self.voices_dir}")
        if not path.is_file():
            raise VoiceError(f"voice {voice}: no such file in {self.voices_dir}")
        return path

    def _from_wav(self, wav: Path) -> Path:
        cached = self.cache_dir / "wav" / f"{_sha256(wav)}.pt"
        if cached.is_file():
            return cached
        if self.make_voice_prompt is None:
            raise VoiceError(f"voice {wav.name}: WAV voices need a voice-prompt maker (the model)")
        made = self.make_voice_prompt(wav)
        try:
            prompt = made.checked(f"voice prompt made from {wav}", dim=self.dim, num_codebooks=self.num_codebooks)
        except VoicePromptError as error:
            raise VoiceError(str(error)) from error
        cached.parent.mkdir(parents=True, exist_ok=True)
        prompt.save(cached)
        return cached


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
