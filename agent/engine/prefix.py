"""Persona prefixes: a prompt prefilled once, kept on the GPU, copied into a slot in milliseconds.

A persona's prompt (voice, silence, role text, silence) is teacher-forced, so it is computed in a few
batched forwards (chunks) in the engine's scratch row (`agent.engine.scratch`, `PersonaPrefill`), and
what a call needs from it is copied out: the keys and values of its P positions in every layer (ring
slots 0..P-1 of a fresh row), the token ring and the offset. Restoring writes exactly that into a
slot's row, and makes the rest of the row's ring invisible, so the slot continues as if it had
stepped the prompt itself. The engine runs a cold persona's chunks between steps, so running calls
never wait for it. Restored pinned, the row keeps those P slots for the whole call
(`TransformerState.pinned`).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from agent.engine.scratch import PrefillScratch
from agent.model.persona_prompt import SILENCE_FRAMES, prefill_piece, prompt_pieces
from agent.model.stream import StreamState
from voices.prompt import VoicePrompt

log = logging.getLogger(__name__)


class PromptTooLong(ValueError):
    pass


@dataclass(frozen=True)
class PersonaPrompt:
    """What a call's prompt is made of. `voice` is Mimi codes [8, F], a stored voice (.pt), or None."""

    voice: torch.Tensor | VoicePrompt | None
    text_tokens: tuple[int, ...]
    silence_frames: int = SILENCE_FRAMES

    @property
    def frames(self) -> int:
        """Prompt steps: the voice, silence, one per role token, silence."""
        if isinstance(self.voice, VoicePrompt):
            voice = self.voice.embeddings.shape[0] + 1  # a stored voice holds the steps after the first
        else:
            voice = 0 if self.voice is None else self.voice.shape[1]
        return voice + 2 * self.silence_frames + len(self.text_tokens)

    @cached_property
    def key(self) -> str:
        """Identifies the prompt's content (same voice and role: same prefix); hashed once."""
        h = hashlib.sha256()
        voice = self.voice
        if isinstance(voice, VoicePrompt):
            tensors: Sequence[torch.Tensor] = (voice.embeddings, voice.cache)
        else:
            tensors = () if voice is None else (voice,)
        h.update(type(voice).__name__.encode())
        for t in tensors:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        h.update(repr((self.text_tokens, self.silence_frames)).encode())
        return h.hexdigest()


@dataclass
class PersonaPrefix:
    keys: list[torch.Tensor]  # per layer [H, P, Dh]
    values: list[torch.Tensor]
    scales: list[tuple[torch.Tensor, ...]]  # per layer, an FP8 ring's key and value scales [H, P]; () if none
    tokens: torch.Tensor  # [K, ring]
    provided: torch.Tensor  # [K, ring]
    offset: int  # the row's offset after the prompt (P + 1)

    @property
    def positions(self) -> int:
        return self.keys[0].shape[1]

    @property
    def nbytes(self) -> int:
        tensors = (*self.keys, *self.values, *(t for layer in self.scales for t in layer))
        return sum(t.numel() * t.element_size() for t in tensors)

    @classmethod
    def capture(cls, state: StreamState, row: int, positions: int) -> PersonaPrefix:
        """A copy of what row `row` holds after a prompt of `positions` steps from a fresh row, made
        without a sync (the row may be stepped again)."""
        rings = [[t[row, :, :positions].clone() for t in cache.tensors] for cache in state.transformer.caches]
        return cls(
            keys=[ring[0] for ring in rings],
            values=[ring[1] for ring in rings],
            scales=[tuple(ring[2:]) for ring in rings],
            tokens=state.tokens[row].clone(),
            provided=state.provided[row].clone(),
            offset=positions + 1,
        )

    def restore(self, state: StreamState, row: int, pinned: bool = False) -> None:
        """Write the prefix into `row`; `pinned` keeps its positions in the ring for the whole call
        (a pinnable state), else the conversation overwrites them as upstream's ring does."""
        P, t = self.positions, state.transformer
        if pinned and t.pinned is None:
            raise ValueError("this KV ring cannot pin a prefix (made without pinnable=True)")
        for cache, k, v, scales in zip(t.caches, self.keys, self.values, self.scales):
            for stored, saved in zip(cache.tensors, (k, v, *scales)):
                stored[row, :, :P] = saved
        t.key_positions[row] = -1
        t.key_positions[row, :P] = torch.arange(P, device=t.key_positions.device)
        t.positions[row] = P
        if t.pinned is not None:
            t.pinned[row] = P if pinned else 0
        state.tokens[row] = self.tokens
        state.provided[row] = self.provided
        state.offsets[row] = self.offset


class PersonaPrefill:
    """One persona's prompt run chunk by chunk in the engine's scratch row, then copied out.

    A chunk is up to `max_frames` steps of one prompt piece, prefilled in one forward (a graphed
    length, `PrefillScratch.chunk_frames`); the state is the same as the one-pass prefill's,
    whatever the chunks (`agent.model.stream.StreamingLM.prefill`). A prefill whose row another
    claimed since its last chunk (a one-pass join ran meanwhile) starts again from its first step.
    """

    def __init__(self, scratch: PrefillScratch, prompt: PersonaPrompt):
        stream = scratch.stream
        context = stream.lm.config.context
        if prompt.frames >= context:
            raise PromptTooLong(f"the persona's prompt takes {prompt.frames} frames; the model's context is "
                                f"{context}: shorten the role text or the voice recording")
        self.scratch = scratch
        self.frames = prompt.frames
        device = scratch.state.offsets.device
        self._pieces = [piece.to(device) for piece in prompt_pieces(stream, prompt.voice, prompt.text_tokens,
                                                                    prompt.silence_frames)]
        self._piece, self._start = 0, 0

    @property
    def done(self) -> bool:
        return self._piece == len(self._pieces) and self.scratch.owned_by(self)

    @torch.no_grad()
    def advance(self, max_frames: int) -> int:
        """Run the next chunk, at most `max_frames` steps within one piece; the steps it ran."""
        if not self.scratch.owned_by(self):
            self.scratch.claim(self)
            self._piece, self._start = 0, 0
        piece = self._pieces[self._piece]
        start = self._start
        stop = start + self.scratch.chunk_frames(min(max_frames, piece.steps - start))
        prefill_piece(self.scratch.stream, self.scratch.state, piece, start, stop, forward=self.scratch.forward)
        self._start = stop
        if stop == piece.steps:
            self._piece, self._start = self._piece + 1, 0
        return stop - start

    def run(self, chunk_frames: int) -> PersonaPrefix:
        """Every remaining chunk, each at most `chunk_frames` steps, then the prefix."""
        while not self.done:
            self.advance(chunk_frames)
        return self.prefix()

    def prefix(self) -> PersonaPrefix:
        if not self.done:
            raise RuntimeError("the prompt's prefill is not finished")
        return PersonaPrefix.capture(self.scratch.state, 0, positions=self.frames - 1)


class PersonaCache:
    """Prefixes by prompt key, least recently used evicted to stay within `max_bytes`."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._prefixes: OrderedDict[str, PersonaPrefix] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self._prefixes.values())

    def __len__(self) -> int:
        return len(self._prefixes)

    def __contains__(self, key: str) -> bool:
        return key in self._prefixes

    def get(self, key: str) -> PersonaPrefix | None:
        prefix = self._prefixes.get(key)
        if prefix is None:
            self.misses += 1
            return None
        self.hits += 1
        self._prefixes.move_to_end(key)
        return prefix

    def put(self, key: str, prefix: PersonaPrefix) -> None:
        """Keep `prefix`, evicting the least recently used first to make room (all of them if need be)."""
        while self._prefixes and self.nbytes + prefix.nbytes > self.max_bytes:
            evicted, _ = self._prefixes.popitem(last=False)
            log.info("persona prefix evicted", extra={"persona": evicted[:12]})
        self._prefixes[key] = prefix
