"""A backend without a model: each slot hears its own input back one frame later.

It has the model backend's interface and timing shape (one frame of delay), so the latency that
transports, jitter buffers, resampling and pacing add can be measured by cross-correlation.
"""

from __future__ import annotations

import torch

from agent.contracts.audio import FRAME_SIZE
from agent.engine.backend import CallSetup, StepOutput


class EchoBackend:
    def __init__(self, num_slots: int):
        self.num_slots = num_slots
        self._previous = torch.zeros(num_slots, FRAME_SIZE)
        self._primed = torch.zeros(num_slots, dtype=torch.bool)

    def begin_join(self, slot: int, call: CallSetup) -> bool:
        self._previous[slot] = 0
        self._primed[slot] = False
        return True

    def leave(self, slot: int) -> None:
        self._previous[slot] = 0
        self._primed[slot] = False

    def step(self, pcm: torch.Tensor, active: torch.Tensor, prefill_seconds: float = 0.0) -> StepOutput:
        out = self._previous.clone()
        ready = self._primed & active
        self._previous = torch.where(active[:, None], pcm, 0.0)
        self._primed = active.clone()
        return StepOutput(pcm=out, text=torch.full((self.num_slots,), -1, dtype=torch.long), ready=ready)
