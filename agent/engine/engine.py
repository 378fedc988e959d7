"""The batched engine: a fixed set of slots on one device, every active call stepped together.

One step is, for all slots at once: Mimi encode of each caller frame, one LM step (temporal
transformer and depformer), Mimi decode of the agent's codes. Every slot has its own row in every
state (codec streams, KV ring, token ring, offset), its own sampling settings and its own random
stream (`agent.engine.noise`, keyed by the call's seed and the slot's step counter), so a call's
output does not depend on which other calls share the batch. A free slot is still computed (the
shapes stay static, which CUDA graphs need) but its output is ignored and it is reset on join.

The caller's codebooks are always given at serve time, so the depformer runs only the agent's 8
steps (`depformer_steps=8`): under greedy decoding the tokens are the same as running all 16;
under sampling only the random stream differs, since the skipped predictions are discarded.
"""

from __future__ import annotations

import logging

import torch

from agent.contracts.audio import FRAME_SIZE
from agent.engine.backend import CallSetup, StepOutput
from agent.engine.noise import uniform_noise
from agent.engine.prefix import PersonaCache, PersonaPrompt
from agent.model.kv_cache import KVDtype
from agent.model.lm import AGENT_CODEBOOKS, LM
from agent.model.mimi import Mimi
from agent.model.sampling import Sampling
from agent.model.stream import StreamingLM

log = logging.getLogger(__name__)


class ModelBackend:
    def __init__(self, mimi: Mimi, lm: LM, num_slots: int, prefix_cache_bytes: int = 4 << 30,
                 depformer_steps: int = AGENT_CODEBOOKS, cuda_graph: bool | None = None,
                 kv_dtype: KVDtype = "bf16"):
        self.mimi, self.lm, self.num_slots = mimi, lm, num_slots
        self.device = lm.text_linear.weight.device
        self.stream = StreamingLM(lm, depformer_steps=depformer_steps, kv_dtype=kv_dtype)
        self.prefixes = PersonaCache(self.stream, prefix_cache_bytes)
        self.lm_state = self.stream.init_state(num_slots)
        self.encoder_state = mimi.init_encoder_state(num_slots)
        self.decoder_state = mimi.init_decoder_state(num_slots)
        self.sampling = Sampling.default(num_slots, self.device)
        self.seeds = torch.zeros(num_slots, dtype=torch.long, device=self.device)
        self.counters = torch.zeros(num_slots, dtype=torch.long, device=self.device)
        self._pcm_in = torch.zeros(num_slots, 1, FRAME_SIZE, device=self.device, dtype=mimi_dtype(mimi))
        self._use_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self._graph: torch.cuda.CUDAGraph | None = None
        self._outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        # The callers' codes of the last step [S, Mimi's codebooks], on the device. A Mimi loaded with
        # 32 codebooks gives the recogniser its input from this one encode (the LM reads the first 8).
        self.caller_codes = torch.zeros(num_slots, mimi.config.num_codebooks, dtype=torch.long, device=self.device)

    # -- calls joining and leaving -------------------------------------------------------------

    def join(self, slot: int, call: CallSetup) -> None:
        prompt = call.prompt
        if not isinstance(prompt, PersonaPrompt):
            raise TypeError("the model backend needs a PersonaPrompt")
        prefix = self.prefixes.get(prompt)
        rows = self._row_mask(slot)
        self.lm_state.reset(rows)
        self.encoder_state.reset(rows)
        self.decoder_state.reset(rows)
        prefix.restore(self.lm_state, slot)
        self.seeds[slot] = call.seed
        self.counters[slot] = 0
        self.set_sampling(slot, call)

    def set_sampling(self, slot: int, call: CallSetup) -> None:
        s = call.sampling
        self.sampling.text_temperature[slot] = s.text_temperature
        self.sampling.text_top_k[slot] = s.text_top_k
        self.sampling.audio_temperature[slot] = s.audio_temperature
        self.sampling.audio_top_k[slot] = s.audio_top_k

    def leave(self, slot: int) -> None:
        """Nothing to undo: the slot's row is reset when the next call joins it."""

    def _row_mask(self, slot: int) -> torch.Tensor:
        rows = torch.zeros(self.num_slots, dtype=torch.bool, device=self.device)
        rows[slot] = True
        return rows

    # -- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, pcm: torch.Tensor, active: torch.Tensor) -> StepOutput:
        pcm_out, text, valid = self.step_on_device(pcm)
        pcm_out, text, valid = pcm_out.float().cpu(), text.cpu(), valid.cpu()  # the one sync per step
        return StepOutput(pcm=pcm_out, text=text, ready=valid & active)

    @torch.no_grad()
    def step_on_device(self, pcm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's device work, queued without a host sync: agent pcm [S, FRAME_SIZE], text [S] and
        valid [S] on the device. `caller_codes` then holds this step's codes."""
        self._pcm_in.copy_(pcm.view(self.num_slots, 1, FRAME_SIZE), non_blocking=True)
        if self._graph is not None:
            self._graph.replay()
            pcm_out, text, valid, self.caller_codes = self._outputs
        else:
            pcm_out, text, valid, self.caller_codes = self._step()
        return pcm_out, text, valid

    def _step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Device work of one step, on the static input buffer: no host sync, no Python per slot."""
        codes = self.mimi.encode_step(self._pcm_in, self.encoder_state)[:, :, 0]  # [S, Mimi's codebooks]
        tokens, valid = self.generate(codes[:, :AGENT_CODEBOOKS])
        agent = tokens[:, 1:1 + AGENT_CODEBOOKS].clamp(min=0)  # rows without output decode garbage, ignored
        pcm_out = self.mimi.decode_step(agent[:, :, None], self.decoder_state)[:, 0]  # [S, FRAME_SIZE]
        return pcm_out, tokens[:, 0], valid, codes

    @torch.no_grad()
    def generate(self, user_codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The LM part of a step, from the callers' codes [S, 8]: tokens [S, 17] and valid [S]."""
        cfg = self.lm.config
        text_noise = uniform_noise(self.seeds, self.counters, cfg.text_card)[:, 0]
        audio_noise = uniform_noise(self.seeds, self.counters, cfg.card, first_stream=1,
                                    streams=self.stream.depformer_steps)
        out = self.stream.step(self.lm_state, user_codes, sampling=self.sampling,
                               text_noise=text_noise, audio_noise=audio_noise)
        self.counters.add_(1)
        return out.tokens, out.valid

    def _capture(self) -> None:
        """Record the step once as a CUDA graph (after warm-up steps on a side stream), to replay it.

        Warm-up and capture advance the states like real steps, so they happen in `warm_up`, before
        any call joins; `warm_up` then resets every row.
        """
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._outputs = self._step()

    def warm_up(self) -> None:
        """Run (and on CUDA capture) the step before the first call, so no caller waits for it.

        Until then steps run eagerly, which is correct but slow on a GPU.
        """
        self._pcm_in.zero_()
        if self._use_graph:
            self._capture()
        else:
            self._step()
        all_rows = torch.ones(self.num_slots, dtype=torch.bool, device=self.device)
        self.lm_state.reset(all_rows)
        self.encoder_state.reset(all_rows)
        self.decoder_state.reset(all_rows)


def mimi_dtype(mimi: Mimi) -> torch.dtype:
    return next(mimi.parameters()).dtype
