"""Persona prefixes: a prompt prefilled once, kept on the GPU, copied into a slot in milliseconds.

A persona's prompt (voice, silence, role text, silence) is teacher-forced, so it is computed in one
batched forward into a scratch row (`prefill_persona`), and what a call needs from it is captured:
the keys and values of its P positions in every layer (they sit in ring slots 0..P-1 of a fresh
row), the token ring and the offset. Restoring writes exactly that into a slot's row, and makes the
rest of the row's ring invisible, so the slot continues as if it had stepped the prompt itself.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agent.model.persona_prompt import SILENCE_FRAMES, prefill_persona
from agent.model.stream import StreamingLM, StreamState
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

    @property
    def key(self) -> str:
        """Identifies the prompt's content (same voice and role: same prefix)."""
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
    def capture(cls, state: StreamState, row: int) -> PersonaPrefix:
        P = int(state.transformer.positions[row])
        if P > state.transformer.key_positions.shape[1]:
            raise ValueError(f"a prompt of {P} frames does not fit the {state.transformer.key_positions.shape[1]}-frame context")
        rings = [[t[row, :, :P].clone() for t in cache.tensors] for cache in state.transformer.caches]
        return cls(
            keys=[ring[0] for ring in rings],
            values=[ring[1] for ring in rings],
            scales=[tuple(ring[2:]) for ring in rings],
            tokens=state.tokens[row].clone(),
            provided=state.provided[row].clone(),
            offset=int(state.offsets[row]),
        )

    def restore(self, state: StreamState, row: int) -> None:
        P, t = self.positions, state.transformer
        for cache, k, v, scales in zip(t.caches, self.keys, self.values, self.scales):
            for stored, saved in zip(cache.tensors, (k, v, *scales)):
                stored[row, :, :P] = saved
        t.key_positions[row] = -1
        t.key_positions[row, :P] = torch.arange(P, device=t.key_positions.device)
        t.positions[row] = P
        state.tokens[row] = self.tokens
        state.provided[row] = self.provided
        state.offsets[row] = self.offset


class PersonaCache:
    """Prefixes by prompt key, least recently used evicted beyond `max_bytes`.

    `get` prefills on a miss, in a scratch state of one row.
    """

    def __init__(self, stream: StreamingLM, max_bytes: int):
        self.stream = stream
        self.max_bytes = max_bytes
        self._prefixes: OrderedDict[str, PersonaPrefix] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self._prefixes.values())

    def __len__(self) -> int:
        return len(self._prefixes)

    def get(self, prompt: PersonaPrompt) -> PersonaPrefix:
        key = prompt.key
        prefix = self._prefixes.get(key)
        if prefix is not None:
            self.hits += 1
            self._prefixes.move_to_end(key)
            return prefix
        self.misses += 1
        prefix = self._prefill(prompt)
        self._prefixes[key] = prefix
        while self.nbytes > self.max_bytes and len(self._prefixes) > 1:
            evicted, _ = self._prefixes.popitem(last=False)
            log.info("persona prefix evicted", extra={"persona": evicted[:12]})
        return prefix

    @torch.no_grad()
    def _prefill(self, prompt: PersonaPrompt) -> PersonaPrefix:
        context = self.stream.lm.config.context
        if prompt.frames >= context:
            raise PromptTooLong(f"the persona's prompt takes {prompt.frames} frames; the model's context is "
                                f"{context}: shorten the role text or the voice recording")
        # A ring just longer than the prompt: the same steps as at full context, a fraction of the memory.
        scratch = self.stream.init_state(1, capacity=prompt.frames + 1)
        voice = prompt.voice
        if isinstance(voice, torch.Tensor):
            voice = voice.to(scratch.offsets.device)
        prefill_persona(self.stream, scratch, voice, prompt.text_tokens, prompt.silence_frames)
        return PersonaPrefix.capture(scratch, 0)
