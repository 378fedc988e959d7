"""The voice-prompt file format (`.pt`), as upstream PersonaPlex saves it and `voices.tgz` ships it.

A voice prompt is what replaying a voice recording through the LM leaves behind: the LM input
embedding of each prompt step, replayed step by step, and the LM's token cache after the last
step, copied back in its place.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch


class VoicePromptError(Exception):
    """A voice-prompt file or value that does not hold a voice prompt; the message is one line."""


@dataclass(frozen=True)
class VoicePrompt:
    embeddings: torch.Tensor  # [steps, 1, 1, dim] float: LM input of each voice-prompt step
    cache: torch.Tensor  # [1, num_codebooks, cache_len] int64: LM token cache after the prompt

    @classmethod
    def from_state(
        cls, state: object, source: str, *, dim: int | None = None, num_codebooks: int | None = None
    ) -> VoicePrompt:
        """Check a `{"embeddings", "cache"}` dict; `dim` and `num_codebooks`, if given, must match."""
        if not isinstance(state, dict) or not {"embeddings", "cache"} <= state.keys():
            raise VoicePromptError(f"{source}: expected a dict with 'embeddings' and 'cache' tensors")
        embeddings, cache = state["embeddings"], state["cache"]
        if not isinstance(embeddings, torch.Tensor) or not isinstance(cache, torch.Tensor):
            raise VoicePromptError(f"{source}: 'embeddings' and 'cache' must be tensors")
        if (
            embeddings.dim() != 4
            or embeddings.shape[0] < 1
            or embeddings.shape[1:3] != (1, 1)
            or not embeddings.is_floating_point()
            or (dim is not None and embeddings.shape[3] != dim)
        ):
            want = f"[steps, 1, 1, {dim or 'dim'}] float"
            raise VoicePromptError(f"{source}: embeddings {_describe(embeddings)}, expected {want}")
        if (
            cache.dim() != 3
            or cache.shape[0] != 1
            or cache.dtype != torch.int64
            or (num_codebooks is not None and cache.shape[1] != num_codebooks)
        ):
            want = f"[1, {num_codebooks or 'num_codebooks'}, cache_len] int64"
            raise VoicePromptError(f"{source}: cache {_describe(cache)}, expected {want}")
        return cls(embeddings=embeddings, cache=cache)

    def checked(self, source: str, *, dim: int | None = None, num_codebooks: int | None = None) -> VoicePrompt:
        """This prompt, if its tensors have the shapes and types a voice prompt (of that model) has."""
        return VoicePrompt.from_state({"embeddings": self.embeddings, "cache": self.cache}, source, dim=dim,
                                      num_codebooks=num_codebooks)

    def save(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a file."""
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        state = {"embeddings": self.embeddings.detach().cpu(), "cache": self.cache.detach().cpu()}
        torch.save(state, partial)
        os.replace(partial, path)


def load_voice_prompt(
    path: Path, *, dim: int | None = None, num_codebooks: int | None = None
) -> VoicePrompt:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise VoicePromptError(f"{path}: not a voice-prompt file ({reason})") from error
    return VoicePrompt.from_state(state, str(path), dim=dim, num_codebooks=num_codebooks)


def _describe(tensor: torch.Tensor) -> str:
    return f"{list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
