"""The PersonaPlex prompt: the teacher-forced frames that give a session its voice and its role.

In upstream's order: the voice (one frame per voice frame, agent = the voice's codes), 2 silence
frames, one frame per text-prompt token (the sentencepiece ids of `<system> {prompt} <system>`),
2 silence frames. The agent's channel is silence outside the voice, the user's is a sine tone
throughout, and the text is padding outside the text prompt. A voice is either Mimi codes or a
stored voice file (upstream's `.pt`: the model inputs of its steps and the token ring after them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from agent.model.stream import StreamingLM, StreamState

SILENCE_CODES = (948, 243, 1178, 546, 1736, 1030, 1978, 2008)  # the agent's channel, silent
SINE_CODES = (430, 1268, 381, 1611, 1095, 1495, 56, 472)  # the user's channel during the prompt
SILENCE_FRAMES = 2


@dataclass(frozen=True)
class StoredVoice:
    """A voice prompt as upstream saves it: the temporal transformer's input of each voice step after
    the session's first, and the token ring after the last."""

    embeddings: torch.Tensor  # [E, dim]
    tokens: torch.Tensor  # [num_streams, ring]

    @classmethod
    def load(cls, path: str | Path) -> StoredVoice:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or not {"embeddings", "cache"} <= data.keys():
            raise ValueError(f"{path}: not a voice prompt file (expected a dict with 'embeddings' and 'cache')")
        embeddings, cache = data["embeddings"], data["cache"]
        if embeddings.dim() != 4 or embeddings.shape[1:3] != (1, 1) or cache.dim() != 3 or cache.shape[0] != 1:
            raise ValueError(f"{path}: unexpected shapes embeddings {tuple(embeddings.shape)}, "
                             f"cache {tuple(cache.shape)} (expected [E, 1, 1, dim] and [1, K, ring])")
        return cls(embeddings=embeddings[:, 0, 0], tokens=cache[0].long())


def prompt_frames(voice_codes: torch.Tensor | None, text_tokens: Sequence[int], text_padding_id: int,
                  silence_frames: int = SILENCE_FRAMES) -> torch.Tensor:
    """The prompt's frames [num_streams, T]: voice_codes [8, F] (or none), silence, text, silence."""
    silence = torch.tensor(SILENCE_CODES)[:, None]
    voice = silence[:, :0] if voice_codes is None else voice_codes.long().cpu()
    text = torch.tensor(list(text_tokens), dtype=torch.long)
    agent = torch.cat([voice, silence.expand(-1, 2 * silence_frames + len(text))], dim=1)  # [8, T]
    text_stream = torch.full((agent.shape[1],), text_padding_id)
    start = voice.shape[1] + silence_frames
    text_stream[start:start + len(text)] = text
    user = torch.tensor(SINE_CODES)[:, None].expand(-1, agent.shape[1])
    return torch.cat([text_stream[None], agent, user])


def prefill_persona(stream: StreamingLM, state: StreamState, voice: torch.Tensor | StoredVoice,
                    text_tokens: Sequence[int], silence_frames: int = SILENCE_FRAMES) -> None:
    """Run the prompt on every row of a fresh `state` (offset 1): voice codes [8, F] or a stored voice.

    A fresh row has already taken the session's first step (see `agent.model.stream`), which reads
    no tokens, so the prompt's first frame is skipped. A stored voice's embeddings are the steps after
    it, fed with the initial tokens as the given frames (upstream's replay); its token ring then
    replaces the state's.
    """
    B, device = state.offsets.shape[0], state.tokens.device
    padding_id = stream.lm.config.text_padding_id
    if isinstance(voice, StoredVoice):
        E, dim = voice.embeddings.shape
        if voice.tokens.shape != state.tokens.shape[1:] or dim != stream.lm.config.dim:
            raise ValueError(f"stored voice of another model: embeddings of {dim}, token ring "
                             f"{tuple(voice.tokens.shape)} (expected {stream.lm.config.dim}, "
                             f"{tuple(state.tokens.shape[1:])})")
        replay = torch.cat([torch.tensor([padding_id]), stream.lm.initial_tokens[1:].cpu()])
        stream.prefill(state, replay[None, :, None].expand(B, -1, E).to(device),
                       embeddings=voice.embeddings[None].expand(B, -1, -1))
        state.tokens.copy_(voice.tokens.to(device).expand_as(state.tokens))
        frames = prompt_frames(None, text_tokens, padding_id, silence_frames)
    else:
        frames = prompt_frames(voice, text_tokens, padding_id, silence_frames)[:, 1:]
    stream.prefill(state, frames[None].expand(B, -1, -1).to(device))
