"""The batched engine: a fixed set of slots on one device, every active call stepped together.

One step is, for all slots at once: Mimi encode of each caller frame, one LM step (temporal
transformer and depformer), Mimi decode of the agent's codes. Every slot has its own row in every
state (codec streams, KV ring, token ring, offset), its own sampling settings and its own random
stream (`agent.engine.noise`, keyed by the call's seed and the slot's step counter), so a call's
output does not depend on which other calls share the batch. A free slot is still computed (the
shapes stay static, which CUDA graphs need) but its output is ignored and it is reset on join.

A call starts from its persona's prefix (`agent.engine.prefix`): copied from the cache, or, for a
persona not seen yet, prefilled first in the engine's scratch row (`agent.engine.scratch`: on a GPU
each chunk one CUDA graph's replay), in chunks that `prefill` runs in the time the steps leave
(`agent.engine.pacer`); the running slots' rows are never touched by it.
A WAV voice's prompt is made the same way, before any prefill: its Mimi encode in chunks of frames
on a row of its own (`agent.engine.voice`), so a voice never stalls the running calls either.

The caller's codebooks are always given at serve time, so the depformer runs only the agent's 8
steps (`depformer_steps=8`): under greedy decoding the tokens are the same as running all 16;
under sampling only the random stream differs, since the skipped predictions are discarded.

With `pin_personas` the KV ring can keep each call's persona prompt past the context (a call set
up with keep_persona "pinned"); a call with "window" loses it as upstream's does. Every call then
pays for the pinned scoring (the pinned slots scored with the step's query turned, in the same
softmax of the decode kernel: at 80 calls on an H200 the LM step took 42.5 ms against 41.1 and the
frame 50.5 against 49.0, bench/pinned-h200.json), so it is off by default: the ring is upstream's,
attention its plain PyTorch call, and a pinned call keeps the window, with a warning.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from agent.contracts.audio import FRAME_SIZE
from agent.engine.backend import CallSetup, StepOutput
from agent.engine.capacity import PREFIX_CACHE_BYTES
from agent.engine.graphs import capture
from agent.engine.noise import uniform_noise
from agent.engine.pacer import MeasuredPacer, PrefillPacer
from agent.engine.prefix import PersonaCache, PersonaPrefill, PersonaPrefix, PersonaPrompt
from agent.engine.scratch import MAX_CHUNK, PrefillScratch
from agent.engine.voice import VoiceEncoding
from agent.model.kv_cache import KVDtype
from agent.model.lm import AGENT_CODEBOOKS, LM
from agent.model.mimi import Mimi
from agent.model.sampling import Sampling
from agent.model.stream import StreamingLM

log = logging.getLogger(__name__)

CALIBRATED_CHUNKS = (1, 16, 64, 256, MAX_CHUNK)  # prefill chunks the pacer times at warm-up: tails and budgets


@dataclass
class PendingJoins:
    """A cold persona's prefill and the calls (by slot) that wait for it."""

    prefill: PersonaPrefill
    calls: dict[int, CallSetup] = field(default_factory=dict)


def persona_prompt(call: CallSetup) -> PersonaPrompt:
    if not isinstance(call.prompt, PersonaPrompt):
        raise TypeError("the model backend needs a PersonaPrompt")
    return call.prompt




class ModelBackend:
    def __init__(self, mimi: Mimi, lm: LM, num_slots: int, prefix_cache_bytes: int = PREFIX_CACHE_BYTES,
                 depformer_steps: int = AGENT_CODEBOOKS, cuda_graph: bool | None = None,
                 kv_dtype: KVDtype = "bf16", pin_personas: bool = False):
        self.mimi, self.lm, self.num_slots = mimi, lm, num_slots
        self.device = lm.text_linear.weight.device
        self.stream = StreamingLM(lm, depformer_steps=depformer_steps, kv_dtype=kv_dtype)
        self.prefixes = PersonaCache(prefix_cache_bytes)
        self.scratch = PrefillScratch(self.stream)
        self.pacer = PrefillPacer(self.device)
        self.voice_pacer = MeasuredPacer()
        self._prefills: OrderedDict[str, PendingJoins] = OrderedDict()  # cold personas, first come first
        self._voices: deque[VoiceEncoding] = deque()  # voices to encode, first come first
        self.lm_state = self.stream.init_state(num_slots, pinnable=pin_personas)
        self.encoder_state = mimi.init_encoder_state(num_slots)
        self.decoder_state = mimi.init_decoder_state(num_slots)
        self.sampling = Sampling.default(num_slots, self.device)
        self.seeds = torch.zeros(num_slots, dtype=torch.long, device=self.device)
        self.counters = torch.zeros(num_slots, dtype=torch.long, device=self.device)
        self._pcm_in = torch.zeros(num_slots, 1, FRAME_SIZE, device=self.device, dtype=mimi_dtype(mimi))
        self._use_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        self._graph: torch.cuda.CUDAGraph | None = None
        self._outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._host_outputs: tuple[torch.Tensor, ...] | None = None  # pinned buffers for the step's outputs
        # The callers' codes of the last step [S, Mimi's codebooks], on the device. A Mimi loaded with
        # 32 codebooks gives the recogniser its input from this one encode (the LM reads the first 8).
        self.caller_codes = torch.zeros(num_slots, mimi.config.num_codebooks, dtype=torch.long, device=self.device)

    # -- calls joining and leaving -------------------------------------------------------------

    def join(self, slot: int, call: CallSetup) -> None:
        """Make `slot` a fresh call now, its persona prefilled in one pass if it is not cached.

        For offline runs, tests and benchmarks; the clock uses `begin_join`, which never delays a step.
        """
        prompt = persona_prompt(call)
        prefix = self.prefixes.get(prompt.key)
        if prefix is None:
            prefix = PersonaPrefill(self.scratch, prompt).run(chunk_frames=prompt.frames)
            self.prefixes.put(prompt.key, prefix)
        self._start(slot, call, prefix)

    def begin_join(self, slot: int, call: CallSetup) -> bool:
        """Make `slot` a fresh call: True when it is ready (its persona is cached); False when its
        persona's prefill is queued, to run in chunks between steps (`prefill`) until the slot is ready.

        A call whose persona is already being prefilled waits for that prefill.
        """
        prompt = persona_prompt(call)
        key = prompt.key
        if key not in self._prefills:
            prefix = self.prefixes.get(key)
            if prefix is not None:
                self._start(slot, call, prefix)
                return True
            self._prefills[key] = PendingJoins(PersonaPrefill(self.scratch, prompt))
        self._prefills[key].calls[slot] = call
        return False

    def queue_voice(self, voice: VoiceEncoding) -> None:
        """Encode `voice` in chunks between steps (`prefill`); its `result` is set when it is made."""
        self._voices.append(voice)

    @property
    def queued(self) -> bool:
        """Voices or prefills wait for the time between steps."""
        return bool(self._voices or self._prefills)

    @torch.no_grad()
    def prefill(self, seconds: float) -> dict[int, Exception | None]:
        """Run queued voices, then prefills, for about `seconds` of device time; the joins that finished,
        by slot: None when the slot is ready, the error when its persona's prefill failed.

        At least one chunk of each kind runs while any waits, so joins progress even when steps leave
        no time. Nothing here waits for the device: the work is queued, to run before the next step.
        """
        finished: dict[int, Exception | None] = {}
        self.voice_pacer.begin()
        while self._voices:
            voice = self._voices[0]
            try:
                seconds = _advance(voice, self.voice_pacer, seconds)
            except Exception as error:  # this voice fails; the others, and the calls, go on
                self._voices.popleft()
                voice.result.set_exception(error)
                continue
            if not voice.done:
                break
            self._voices.popleft()
            voice.result.set_result(voice.prompt)
        self.pacer.begin()
        while self._prefills:
            key, pending = next(iter(self._prefills.items()))
            try:
                seconds = _advance(pending.prefill, self.pacer, seconds)
            except Exception as error:  # e.g. out of memory: these calls fail, the others go on
                del self._prefills[key]
                finished.update({slot: error for slot in pending.calls})
                continue
            if not pending.prefill.done:
                break
            del self._prefills[key]
            prefix = pending.prefill.prefix()
            self.prefixes.put(key, prefix)
            for slot, call in pending.calls.items():
                self._start(slot, call, prefix)
                finished[slot] = None
        return finished

    def _start(self, slot: int, call: CallSetup, prefix: PersonaPrefix) -> None:
        rows = self._row_mask(slot)
        self.lm_state.reset(rows)
        self.encoder_state.reset(rows)
        self.decoder_state.reset(rows)
        pinned = call.keep_persona == "pinned"
        if pinned and self.lm_state.transformer.pinned is None:
            log.warning("keep_persona pinned needs an engine with pin_personas: this call keeps the window",
                        extra={"slot": slot})
            pinned = False
        prefix.restore(self.lm_state, slot, pinned=pinned)
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
        """A call waiting for its persona stops waiting (the prefill goes on: the persona is cached);
        otherwise nothing to undo: the slot's row is reset when the next call joins it."""
        for pending in self._prefills.values():
            pending.calls.pop(slot, None)

    def _row_mask(self, slot: int) -> torch.Tensor:
        rows = torch.zeros(self.num_slots, dtype=torch.bool, device=self.device)
        rows[slot] = True
        return rows

    # -- the step ------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, pcm: torch.Tensor, active: torch.Tensor, prefill_seconds: float = 0.0) -> StepOutput:
        """One frame of every slot, then `prefill_seconds` of queued prefills (`StepOutput.joined`).

        The prefill's kernels are launched while the device runs the step, queued behind the step's
        outputs, and the one sync waits for those outputs only: the prefill runs on the device in
        the time after the step, and the host's launches are hidden behind the step.
        """
        pcm_out, text, valid = self.step_on_device(pcm)
        outputs = self._outputs_to_host(pcm_out, text, valid)
        joined = self.prefill(prefill_seconds) if self.queued else {}
        pcm_out, text, valid = outputs()  # the one sync per step
        return StepOutput(pcm=pcm_out, text=text, ready=valid & active, joined=joined)

    def _outputs_to_host(self, *tensors: torch.Tensor) -> Callable[[], tuple[torch.Tensor, ...]]:
        """Queue the copies of a step's outputs to the host; the returned call waits for them alone."""
        if self.device.type != "cuda":
            host = tuple(t.float().cpu() if t.is_floating_point() else t.cpu() for t in tensors)
            return lambda: host
        if self._host_outputs is None:
            self._host_outputs = tuple(torch.empty(t.shape, dtype=torch.float32 if t.is_floating_point() else t.dtype,
                                                   pin_memory=True) for t in tensors)
        for buffer, t in zip(self._host_outputs, tensors):
            buffer.copy_(t, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()

        def wait() -> tuple[torch.Tensor, ...]:
            copied.synchronize()
            return tuple(buffer.clone() for buffer in self._host_outputs)

        return wait

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

    def warm_up(self) -> None:
        """Run (and on CUDA capture) the step before the first call, so no caller waits for it.

        Until then steps run eagerly, which is correct but slow on a GPU.
        """
        self._pcm_in.zero_()
        largest_chunk = min(MAX_CHUNK, self.lm.config.context - 2)  # a prompt's steps stay within the context
        if self._use_graph:  # warm-up and capture advance the states: every row is reset below
            self._graph, self._outputs = capture(self._step)
            self.scratch.record(largest_chunk)
        else:
            self._step()
        if self.device.type == "cuda":  # timed chunks of lengths prefills run (graphed ones, where recorded)
            lengths = {self.scratch.chunk_frames(min(steps, largest_chunk)) for steps in CALIBRATED_CHUNKS}
            self.pacer.calibrate(self._calibration_forward, sorted(lengths))
        all_rows = torch.ones(self.num_slots, dtype=torch.bool, device=self.device)
        self.lm_state.reset(all_rows)
        self.encoder_state.reset(all_rows)
        self.decoder_state.reset(all_rows)

    def _calibration_forward(self, frames: int) -> None:
        """A prompt chunk of `frames` steps in the scratch row, as prefills run it: what the pacer times."""
        cfg = self.lm.config
        self.scratch.claim(None)
        self.scratch.forward(torch.zeros(1, cfg.num_streams, frames, dtype=torch.long, device=self.device))


def _advance(work: PersonaPrefill | VoiceEncoding, pacer: PrefillPacer | MeasuredPacer, seconds: float) -> float:
    """Chunks of `work` while its pacer finds them time in `seconds`; the seconds left."""
    while not work.done:
        frames = pacer.frames_within(seconds)
        if frames <= 0:
            break
        ran = work.advance(frames)
        pacer.ran(ran)
        seconds -= pacer.cost(ran)
    return seconds


def mimi_dtype(mimi: Mimi) -> torch.dtype:
    return next(mimi.parameters()).dtype
