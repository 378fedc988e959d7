"""What the clock drives: a fixed number of slots stepped together, tensors in and tensors out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import torch

from agent.engine.prefix import PersonaPrompt
from agent.model.sampling import (
    AUDIO_TEMPERATURE,
    AUDIO_TOP_K,
    TEXT_TEMPERATURE,
    TEXT_TOP_K,
)

if TYPE_CHECKING:
    from agent.engine.voice import VoiceEncoding


@dataclass
class StepOutput:
    pcm: torch.Tensor  # [S, FRAME_SIZE] float32 on the CPU: each slot's agent audio
    text: torch.Tensor  # [S] long: the agent's text token for the frame (-1 when none)
    ready: torch.Tensor  # [S] bool: the slot produced output (False while its model delay fills)
    caller_text: torch.Tensor | None = None  # [S] long: the recogniser's text token of the caller's frame
    caller_heads: torch.Tensor | None = None  # [S, heads, classes] float32: its semantic VAD
    # Joins whose prefill the step's `prefill_seconds` finished, by slot: None when ready, else the error.
    joined: dict[int, Exception | None] = field(default_factory=dict)


class Backend(Protocol):
    num_slots: int

    def begin_join(self, slot: int, call: "CallSetup") -> bool:
        """Make `slot` a fresh call: True when it is ready now (its persona prompt applied), False
        when its prompt must be prefilled first, by later steps' `prefill_seconds`, before the slot
        may be stepped."""

    def leave(self, slot: int) -> None:
        """Free `slot`; the other slots are not disturbed."""

    def queue_voice(self, voice: VoiceEncoding) -> None:
        """Encode `voice` in the `prefill_seconds` of later steps, before their prefills; its
        `result` is set when it is made. (Only backends with a model: no other makes voices.)"""

    def step(self, pcm: torch.Tensor, active: torch.Tensor, prefill_seconds: float = 0.0) -> StepOutput:
        """One frame for every slot: pcm [S, FRAME_SIZE] float32, active [S] bool; then about
        `prefill_seconds` of device time of the voices and prefills queued (`StepOutput.joined`)."""


@dataclass(frozen=True)
class SamplingSettings:
    """A call's sampling: temperature <= 0 is greedy. Defaults are upstream's."""

    text_temperature: float = TEXT_TEMPERATURE
    text_top_k: int = TEXT_TOP_K
    audio_temperature: float = AUDIO_TEMPERATURE
    audio_top_k: int = AUDIO_TOP_K


KeepPersona = Literal["pinned", "window"]  # personas.schema.Persona.keep_persona


@dataclass(frozen=True)
class CallSetup:
    """Everything a slot needs to start a call. `prompt` is None for backends without a model.

    `keep_persona` "pinned" keeps the prompt in the KV ring past the context; "window" lets the
    conversation overwrite it, as upstream does."""

    prompt: PersonaPrompt | None = None
    sampling: SamplingSettings = SamplingSettings()
    seed: int = 0
    keep_persona: KeepPersona = "window"
