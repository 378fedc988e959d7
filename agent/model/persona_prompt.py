"""The PersonaPlex prompt: the teacher-forced frames that give a session its voice and its role.

In upstream's order: the voice (one frame per voice frame, agent = the voice's codes), 2 silence
frames, one frame per text-prompt token (the sentencepiece ids of `<system> {prompt} <system>`),
2 silence frames. The agent's channel is silence outside the voice, the user's is a sine tone
throughout, and the text is padding outside the text prompt. A voice is either Mimi codes or a
stored voice file (upstream's `.pt`: the model inputs of its steps and the token ring after them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from agent.model.stream import StreamingLM, StreamState
from voices.prompt import VoicePrompt

SILENCE_CODES = (948, 243, 1178, 546, 1736, 1030, 1978, 2008)  # the agent's channel, silent
SINE_CODES = (430, 1268, 381, 1611, 1095, 1495, 56, 472)  # the user's channel during the prompt
SILENCE_FRAMES = 6  # silence steps after the voice and after the role: 0.5 s, as upstream's server and offline tool

Prefill = Callable[[torch.Tensor, torch.Tensor | None], None]  # a forward of frames [B, K, T], embeddings


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


@dataclass(frozen=True)
class PromptPiece:
    """A run of a prompt's teacher-forced steps, prefilled whole or in chunks: the same state either way.

    `embeddings` [T, dim] replace the model's input of these steps (a stored voice); `tokens_after`
    [K, ring] replaces the state's token ring once the last of them is done (a stored voice's ring).
    """

    frames: torch.Tensor  # [K, T] long, on the CPU
    embeddings: torch.Tensor | None = None
    tokens_after: torch.Tensor | None = None

    @property
    def steps(self) -> int:
        return self.frames.shape[1]

    def to(self, device: torch.device) -> PromptPiece:
        """On `device` (copied once: each chunk's slice is then no copy from the host).

        On a GPU the copies go through pinned memory and do not wait: a prefill's first chunk is
        launched while the device runs a step, and a copy from pageable memory would hold the host
        until that step is done."""
        def moved(t: torch.Tensor) -> torch.Tensor:
            if device.type != "cuda" or t.device.type != "cpu":
                return t.to(device)
            return t.contiguous().pin_memory().to(device, non_blocking=True)  # contiguous: pinning copies

        return PromptPiece(*(None if t is None else moved(t) for t in (self.frames, self.embeddings, self.tokens_after)))


def prompt_pieces(stream: StreamingLM, voice: torch.Tensor | VoicePrompt | None, text_tokens: Sequence[int],
                  silence_frames: int = SILENCE_FRAMES) -> list[PromptPiece]:
    """The steps that run a prompt on a fresh row (offset 1): voice codes [8, F], a stored voice, or none.

    A fresh row has already taken the session's first step (see `agent.model.stream`), which reads
    no tokens, so the prompt's first frame is skipped. A stored voice's embeddings are the steps after
    it, fed with the initial tokens as the given frames (upstream's replay); its token ring then
    replaces the state's.
    """
    padding_id = stream.lm.config.text_padding_id
    if not isinstance(voice, VoicePrompt):
        return [PromptPiece(prompt_frames(voice, text_tokens, padding_id, silence_frames)[:, 1:])]
    embeddings, tokens = voice.embeddings[:, 0, 0], voice.cache[0]  # [E, dim], [K, ring]
    E, dim = embeddings.shape
    ring = (stream.lm.config.num_streams, stream.ring)
    if tuple(tokens.shape) != ring or dim != stream.lm.config.dim:
        raise ValueError(f"stored voice of another model: embeddings of {dim}, token ring "
                         f"{tuple(tokens.shape)} (expected {stream.lm.config.dim}, {ring})")
    return [PromptPiece(_replay_frames(stream, E)[0], embeddings, tokens),
            PromptPiece(prompt_frames(None, text_tokens, padding_id, silence_frames))]


def prefill_piece(stream: StreamingLM, state: StreamState, piece: PromptPiece, start: int, stop: int,
                  forward: Prefill | None = None) -> None:
    """Run steps start..stop-1 of `piece` on every row of `state`, after its steps before `start`.

    `forward(frames, embeddings)` runs the forward in place of `stream.prefill` on `state` (the
    engine's scratch row replays it as a CUDA graph)."""
    B, device = state.offsets.shape[0], state.tokens.device
    frames = piece.frames[None, :, start:stop].expand(B, -1, -1).to(device)
    embeddings = None if piece.embeddings is None else piece.embeddings[None, start:stop].expand(B, -1, -1)
    if forward is None:
        stream.prefill(state, frames, embeddings=embeddings)
    else:
        forward(frames, embeddings)
    if stop == piece.steps and piece.tokens_after is not None:
        state.tokens.copy_(piece.tokens_after.to(device).expand_as(state.tokens))


def prefill_persona(stream: StreamingLM, state: StreamState, voice: torch.Tensor | VoicePrompt | None,
                    text_tokens: Sequence[int], silence_frames: int = SILENCE_FRAMES) -> None:
    """Run the prompt on every row of a fresh `state` (offset 1), each piece in one pass."""
    for piece in prompt_pieces(stream, voice, text_tokens, silence_frames):
        prefill_piece(stream, state, piece, 0, piece.steps)


def _replay_frames(stream: StreamingLM, steps: int) -> torch.Tensor:
    """The tokens given with a stored voice's embeddings [1, K, steps]: text padding, initial audio."""
    padding_id = stream.lm.config.text_padding_id
    replay = torch.tensor([padding_id] + stream.lm.initial_token_ids[1:])
    return replay[None, :, None].expand(1, -1, steps)


@torch.no_grad()
def voice_prompt_from_codes(stream: StreamingLM, voice_codes: torch.Tensor, source: str) -> VoicePrompt:
    """A stored voice (upstream's `.pt` layout) from a voice's Mimi codes [8, F], on the model's device.

    What upstream saves after stepping the voice: the model input of each step after the first,
    and the token ring after the last. Replaying it gives the same session as the codes. Both are
    the given tokens' alone (`StreamingLM.teacher_force`): the transformer need not run, and the
    state's KV ring is never written (one slot). No host sync: the caller copies the tensors.
    """
    state = stream.init_state(1, capacity=1)
    frames = prompt_frames(voice_codes, (), stream.lm.config.text_padding_id, silence_frames=0)[:, 1:]
    inputs = stream.teacher_force(state, frames[None].to(state.tokens.device))  # [1, F - 1, dim]
    return VoicePrompt.from_state({"embeddings": inputs[0, :, None, None].float(), "cache": state.tokens}, source)
