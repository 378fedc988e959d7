"""The recogniser's engine: the callers' words, one step per 80 ms tick for every slot, beside the agent's.

It reads the callers' Mimi codes that the agent's engine has just computed (`ModelBackend.caller_codes`,
all 32 codebooks of the one encode; the agent's LM reads the first 8), so the audio is encoded once.
Slots are the agent's: the same index is the same call in both engines. Every slot has its own row
(KV ring, position, last text token), so a call's words do not depend on the calls beside it, and a
join resets only its row. A free slot is still computed (static shapes for the CUDA graph) and its
output ignored. Greedy, as Kyutai runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agent.engine.backend import CallSetup, StepOutput
from agent.engine.engine import ModelBackend
from agent.engine.graphs import capture
from agent.engine.voice import VoiceEncoding
from agent.model.stt import StreamingStt, SttLM


@dataclass
class SttOutput:
    text: torch.Tensor  # [S] long: each slot's text token for the frame (padding most of the time)
    heads: torch.Tensor  # [S, extra_heads, classes] float32: the semantic VAD's probabilities
    ready: torch.Tensor  # [S] bool: the slot holds a call


class SttBackend:
    def __init__(self, lm: SttLM, num_slots: int, cuda_graph: bool | None = None):
        self.lm, self.num_slots = lm, num_slots
        self.device = lm.text_linear.weight.device
        self.stream = StreamingStt(lm)
        self.state = self.stream.init_state(num_slots)
        self._codes_in = torch.zeros(num_slots, lm.config.n_q, dtype=torch.long, device=self.device)
        self._use_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self._graph: torch.cuda.CUDAGraph | None = None
        self._outputs: tuple[torch.Tensor, torch.Tensor] | None = None

    def join(self, slot: int) -> None:
        rows = torch.zeros(self.num_slots, dtype=torch.bool, device=self.device)
        rows[slot] = True
        self.state.reset(rows)

    def leave(self, slot: int) -> None:
        """Nothing to undo: the slot's row is reset when the next call joins it."""

    @torch.no_grad()
    def advance(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every slot from the callers' codes [S, >= n_q] on the device: text [S], heads
        [S, H, classes], both on the device (no host sync, so it can follow the agent's step)."""
        self._codes_in.copy_(codes[:, :self.lm.config.n_q])
        if self._graph is not None:
            self._graph.replay()
            return self._outputs
        return self._step()

    def step(self, codes: torch.Tensor, active: torch.Tensor) -> SttOutput:
        text, heads = self.advance(codes)
        return SttOutput(text=text.cpu(), heads=heads.cpu(), ready=active.cpu())

    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.stream.step(self.state, self._codes_in)
        return out.text, out.heads

    def warm_up(self) -> None:
        """Run (and on CUDA capture) the step before the first call joins; then every row is fresh."""
        self._codes_in.zero_()
        if self._use_graph:
            self._graph, self._outputs = capture(self._step)
        else:
            self._step()
        self.state.reset(torch.ones(self.num_slots, dtype=torch.bool, device=self.device))


class RecognisingBackend:
    """The agent's engine and the recogniser's as one backend for the clock: a call joins both in the
    same slot, and each step runs the agent, then the recogniser on the codes the agent's Mimi just
    computed, with one host sync for both."""

    def __init__(self, agent: ModelBackend, stt: SttBackend):
        if agent.num_slots != stt.num_slots:
            raise ValueError(f"the agent has {agent.num_slots} slots and the recogniser {stt.num_slots}")
        codebooks, needed = agent.mimi.config.num_codebooks, stt.lm.config.n_q
        if codebooks < needed:
            raise ValueError(f"the agent's Mimi gives {codebooks} codebooks; the recogniser reads {needed}")
        self.agent, self.stt = agent, stt
        self.num_slots = agent.num_slots

    def join(self, slot: int, call: CallSetup) -> None:
        self.agent.join(slot, call)
        self.stt.join(slot)

    def begin_join(self, slot: int, call: CallSetup) -> bool:
        """The recogniser's row is made fresh when the agent's is ready, so it hears the call from its start."""
        ready = self.agent.begin_join(slot, call)
        if ready:
            self.stt.join(slot)
        return ready

    def leave(self, slot: int) -> None:
        self.agent.leave(slot)
        self.stt.leave(slot)

    def queue_voice(self, voice: VoiceEncoding) -> None:
        self.agent.queue_voice(voice)

    def step(self, pcm: torch.Tensor, active: torch.Tensor, prefill_seconds: float = 0.0) -> StepOutput:
        """The agent's step and the recogniser's, then the agent's prefills (after the sync: their
        launches are not hidden behind the step here)."""
        pcm_out, text, valid = self.agent.step_on_device(pcm)
        caller_text, caller_heads = self.stt.advance(self.agent.caller_codes)
        out = StepOutput(pcm=pcm_out.float().cpu(), text=text.cpu(), ready=valid.cpu() & active,
                         caller_text=caller_text.cpu(), caller_heads=caller_heads.cpu())
        if self.agent.queued:
            out.joined = self.agent.prefill(prefill_seconds)
            for slot, error in out.joined.items():
                if error is None:
                    self.stt.join(slot)
        return out

    def warm_up(self) -> None:
        self.agent.warm_up()
        self.stt.warm_up()
