"""`plexline bench churn`: the engine under a call centre's traffic, as its callers feel it.

For each size N, an engine of N slots runs on its real clock (`EngineClock`, one step per 80 ms)
with N calls at all times, as a full call centre: each call lasts an exponential time of mean
`mean_call_seconds` (compressed from minutes: what matters is joins per second at N) and a new call
takes its slot as it ends, so calls leave and join as a Poisson process of rate N / mean. A share
`cold_share` of the new calls bring a persona the engine has never seen: a voice of their own (Mimi
codes, or a stored voice as a WAV voice becomes) and a role of 50 to 1000 tokens; the others take
one of a few personas cached before the traffic starts (cold too if the cache evicted it since). Every call pushes caller PCM in 20 ms packets and reads the
agent's frames, as the worker's media bridge does.

Reported per N, over `seconds` of traffic:
- frame time p50/p99/max: a tick's step from caller PCM in to agent PCM out, on the engine thread
  (the lockstep benchmark's frame), now with whatever prefill work of joins ran before it; every
  running call waits that long for its frame, and under 80 ms its frame is on time;
- frame gap p99/max: the time between consecutive frames of a running call (80 ms on time);
- overruns per minute: ticks that ended after the next one was due (the clock's count);
- join to ready p50/p99, cold and cached: from `EngineClock.join` to the slot's prefix in place
  (it is stepped from the next tick on), the wait for the step in flight included;
- join to first frame p50/p99: to the call's first agent frame.
The rated capacity is the largest N with frame time p99 < 80 ms, no overrun, no failed join
(a cold join that ran out of memory, say) and cold joins ready within 300 ms (p99): what a worker
offers (`agent.engine.capacity.rated_calls` reads it from the JSON). Prints a table last.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from agent.contracts.audio import SAMPLE_RATE
from agent.engine.backend import CallSetup
from agent.engine.capacity import slots_that_fit
from agent.engine.clock import AgentFrame, CallSlot, EngineClock
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaCache, PersonaPrompt
from agent.model.kv_cache import KVDtype
from agent.model.loading import Models
from agent.model.persona_prompt import voice_prompt_from_codes
from agent.model.stream import StreamingLM
from bench.engine import percentile
from voices.prompt import VoicePrompt

BUDGET_MS = 80.0
COLD_READY_MS = 300.0  # a caller with a persona never seen waits no longer than this for the answer (p99)
PACKET = SAMPLE_RATE // 50  # 20 ms of caller audio, as an RTP packet brings
CACHED_PERSONAS = 8  # 8 s voice and an 80-token role each, cached before the traffic starts
STORED_VOICES = 4  # stored voices (as WAV voices become) that cold personas draw from, with new roles
ROLE_TOKENS = (50, 1000)  # a cold persona's role length, uniform
VOICE_FRAMES = (50, 250)  # a cold persona's own voice (4 to 20 s), uniform


@dataclass
class ChurnResult:
    calls: int
    seconds: float
    joins_cold: int
    joins_cached: int
    joins_failed: int
    failure: str  # the first failed join's error
    frame_p50_ms: float
    frame_p99_ms: float
    frame_max_ms: float
    gap_p99_ms: float
    gap_max_ms: float
    overruns_per_minute: float
    ready_cold_p50_ms: float
    ready_cold_p99_ms: float
    ready_cached_p50_ms: float
    ready_cached_p99_ms: float
    first_frame_cold_p50_ms: float
    first_frame_cold_p99_ms: float
    first_frame_cached_p50_ms: float
    first_frame_cached_p99_ms: float
    memory_gb: float
    prefill_fixed_ms: float  # the pacer's cost model: per prefill forward, and per prompt step
    prefill_us_per_frame: float

    @property
    def real_time(self) -> bool:
        """Every running call's frame on time, and every join answered soon."""
        return (self.frame_p99_ms < BUDGET_MS and self.overruns_per_minute == 0 and self.joins_failed == 0
                and self.ready_cold_p99_ms < COLD_READY_MS)


@dataclass
class ChurnBench:
    device: str
    model: str
    weights: str  # the LM's linear layers: bf16 or fp8
    kv_dtype: str  # the KV ring: bf16 or fp8
    recogniser: str | None  # a caller recogniser stepped beside the agent: none here
    mean_call_seconds: float
    cold_share: float
    memory_bound_calls: int  # what `--slots auto` gives on this device (memory alone)
    rated_calls: int = 0  # the largest N that held real time under churn
    sizes: list[ChurnResult] = field(default_factory=list)
    stopped: str = ""


class Personas:
    """The persona mix: a few cached ones, and cold ones never seen before (each distinct)."""

    def __init__(self, models: Models, rng: random.Random):
        cfg = models.lm.config
        self.rng, self.card, self.text_card = rng, cfg.card, cfg.text_card
        self.generator = torch.Generator().manual_seed(rng.randrange(1 << 30))
        self.cached = [self._prompt(self._codes(100), 80) for _ in range(CACHED_PERSONAS)]
        stream = StreamingLM(models.lm)
        self.stored = [on_host(voice_prompt_from_codes(stream, self._codes(100).to(models.device), f"bench-{i}"))
                       for i in range(STORED_VOICES)]

    def cold(self) -> PersonaPrompt:
        voice = self.rng.choice(self.stored) if self.rng.random() < 0.5 else self._codes(self.rng.randint(*VOICE_FRAMES))
        return self._prompt(voice, self.rng.randint(*ROLE_TOKENS))

    def _codes(self, frames: int) -> torch.Tensor:
        return torch.randint(0, self.card, (8, frames), generator=self.generator)

    def _prompt(self, voice: torch.Tensor | VoicePrompt, role_tokens: int) -> PersonaPrompt:
        role = torch.randint(4, self.text_card, (role_tokens,), generator=self.generator)
        return PersonaPrompt(voice=voice, text_tokens=tuple(role.tolist()), silence_frames=6)


def on_host(voice: VoicePrompt) -> VoicePrompt:
    """A voice as a worker holds a stored one: read from its file, in host memory."""
    return VoicePrompt(embeddings=voice.embeddings.cpu(), cache=voice.cache.cpu())


@dataclass
class CallRecord:
    cold: bool
    asked: float  # time.monotonic() of the join
    ready: float = 0.0
    first_frame: float = 0.0
    frames: list[float] = field(default_factory=list)  # when each agent frame came out


class Traffic:
    """N calls at all times: each ends after an exponential time and a new one takes its slot."""

    def __init__(self, clock: EngineClock, cache: PersonaCache, personas: Personas, mean_call_seconds: float,
                 cold_share: float, rng: random.Random):
        self.clock, self.cache, self.personas, self.rng = clock, cache, personas, rng
        self.mean, self.cold_share = mean_call_seconds, cold_share
        self.records: list[CallRecord] = []
        self.failed: list[str] = []  # joins that failed, and why
        self.slots: dict[int, CallSlot] = {}
        self.packet = (np.random.default_rng(0).standard_normal(PACKET) * 0.1).astype(np.float32)

    async def call(self, new_persona: bool, measured: Callable[[], bool]) -> None:
        """One call: join (with a new persona, or one of the cached ones), talk until it ends, leave.

        The call counts as cold when its persona is not in the cache as it joins: a new one, or one
        the cache evicted since.
        """
        prompt = self.personas.cold() if new_persona else self.rng.choice(self.personas.cached)
        record = CallRecord(cold=prompt.key not in self.cache, asked=time.monotonic())
        slot = await self.clock.join(CallSetup(prompt=prompt, seed=self.rng.randrange(1 << 30)))
        record.ready = time.monotonic()
        slot.listener = lambda caller, agent: self._heard(record, agent)
        if measured():
            self.records.append(record)
        self.slots[slot.index] = slot
        try:
            await asyncio.sleep(self.rng.expovariate(1 / self.mean))
        finally:
            del self.slots[slot.index]
            await self.clock.leave(slot)

    @staticmethod
    def _heard(record: CallRecord, agent: AgentFrame | None) -> None:
        if agent is not None:
            now = time.monotonic()
            record.first_frame = record.first_frame or now
            record.frames.append(now)

    async def line(self, first: bool, measured: Callable[[], bool], until: float) -> None:
        """One slot's calls, one after another; the first is cached (the centre was already full)."""
        new_persona = False if first else None
        while time.monotonic() < until:
            try:
                await self.call(self.rng.random() < self.cold_share if new_persona is None else new_persona, measured)
            except Exception as error:  # a join that failed (out of memory, say): counted, the line goes on
                self.failed.append(repr(error))
            new_persona = None

    async def media(self, until: float) -> None:
        """Every running call's caller audio in 20 ms packets; its agent frames read as they come."""
        loop = asyncio.get_running_loop()
        next_packet = loop.time()
        while time.monotonic() < until:
            for slot in list(self.slots.values()):
                slot.push(self.packet)
                while not slot.output.empty():
                    slot.output.get_nowait()
            next_packet += PACKET / SAMPLE_RATE
            await asyncio.sleep(max(0.0, next_packet - loop.time()))


async def run_traffic(backend: ModelBackend, personas: Personas, seconds: float, mean_call_seconds: float,
                      cold_share: float, rng: random.Random) -> tuple[Traffic, list[float], float]:
    """The traffic (its calls' records), the frame times (ms) and the overruns per minute of `seconds`."""
    clock = EngineClock(backend)
    clock.start()
    traffic = Traffic(clock, backend.prefixes, personas, mean_call_seconds, cold_share, rng)
    warm = time.monotonic() + 5.0  # the first calls fill the slots at once: a burst, not the steady state
    until = warm + seconds

    def measuring() -> bool:
        return time.monotonic() >= warm

    try:
        lines = [asyncio.ensure_future(traffic.line(True, measuring, until)) for _ in range(backend.num_slots)]
        media = asyncio.ensure_future(traffic.media(until))
        await asyncio.sleep(warm - time.monotonic())
        overruns = clock.stats.overruns
        clock.stats.step_seconds.clear()
        frame_times: list[float] = []
        while time.monotonic() < until:
            await asyncio.sleep(1.0)
            frame_times.extend(clock.stats.step_seconds)
            clock.stats.step_seconds.clear()
        overruns = clock.stats.overruns - overruns
        for task in (*lines, media):
            task.cancel()
        await asyncio.gather(*lines, media, return_exceptions=True)
    finally:
        await clock.stop()
    return traffic, [s * 1000 for s in frame_times], overruns / (seconds / 60)


def churn_size(models: Models, calls: int, seconds: float, mean_call_seconds: float, cold_share: float,
               kv_dtype: KVDtype, personas: Personas, rng: random.Random) -> ChurnResult:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(models.device)
    backend = ModelBackend(models.mimi, models.lm, num_slots=calls, kv_dtype=kv_dtype)
    backend.warm_up()
    for prompt in personas.cached:  # in the cache before the traffic, as a running worker has them
        backend.join(0, CallSetup(prompt=prompt))
    traffic, frames, overruns = asyncio.run(
        run_traffic(backend, personas, seconds, mean_call_seconds, cold_share, rng))
    records = traffic.records
    memory = torch.cuda.max_memory_allocated(models.device) / 1e9
    pacer = backend.pacer
    del backend
    gc.collect()

    def ms(values: list[float], q: float) -> float:
        return percentile(values, q) * 1000 if values else 0.0

    cold = [r for r in records if r.cold and r.first_frame]
    cached = [r for r in records if not r.cold and r.first_frame]
    gaps = [b - a for r in records for a, b in zip(r.frames, r.frames[1:])]
    return ChurnResult(
        calls=calls, seconds=seconds, joins_cold=len(cold), joins_cached=len(cached),
        joins_failed=len(traffic.failed), failure=traffic.failed[0] if traffic.failed else "",
        frame_p50_ms=percentile(frames, 0.5), frame_p99_ms=percentile(frames, 0.99), frame_max_ms=max(frames),
        gap_p99_ms=ms(gaps, 0.99), gap_max_ms=max(gaps, default=0.0) * 1000, overruns_per_minute=overruns,
        ready_cold_p50_ms=ms([r.ready - r.asked for r in cold], 0.5),
        ready_cold_p99_ms=ms([r.ready - r.asked for r in cold], 0.99),
        ready_cached_p50_ms=ms([r.ready - r.asked for r in cached], 0.5),
        ready_cached_p99_ms=ms([r.ready - r.asked for r in cached], 0.99),
        first_frame_cold_p50_ms=ms([r.first_frame - r.asked for r in cold], 0.5),
        first_frame_cold_p99_ms=ms([r.first_frame - r.asked for r in cold], 0.99),
        first_frame_cached_p50_ms=ms([r.first_frame - r.asked for r in cached], 0.5),
        first_frame_cached_p99_ms=ms([r.first_frame - r.asked for r in cached], 0.99),
        memory_gb=memory, prefill_fixed_ms=pacer.fixed_seconds * 1000,
        prefill_us_per_frame=pacer.seconds_per_frame * 1e6)


def memory_bound(models: Models, kv_dtype: KVDtype) -> int:
    """The slots `--slots auto` gives on this device, from its free memory (the weights loaded)."""
    gc.collect()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(models.device)
    return slots_that_fit(models.lm.config, models.lm.text_linear.weight.dtype, free, kv_dtype=kv_dtype)


def bench_churn(models: Models, sizes: list[int | str], seconds: float, mean_call_seconds: float,
                cold_share: float, kv_dtype: KVDtype = "bf16", seed: int = 0, progress=print) -> ChurnBench:
    """`sizes` are call counts, or "auto" for the memory bound."""
    rng = random.Random(seed)
    personas = Personas(models, rng)
    bound = memory_bound(models, kv_dtype)
    result = ChurnBench(device=torch.cuda.get_device_name(models.device), model=models.name,
                        weights=models.weights, kv_dtype=kv_dtype, recogniser=None,
                        mean_call_seconds=mean_call_seconds, cold_share=cold_share, memory_bound_calls=bound)
    progress(f"memory bound (--slots auto): {bound} calls")
    for calls in dict.fromkeys(bound if size == "auto" else int(size) for size in sizes):  # in order, once each
        try:
            row = churn_size(models, calls, seconds, mean_call_seconds, cold_share, kv_dtype, personas, rng)
        except torch.OutOfMemoryError:
            result.stopped = f"out of memory at {calls} calls"
            progress(result.stopped)
            break
        result.sizes.append(row)
        progress(f"{calls:>3} calls: frame p50 {row.frame_p50_ms:.1f} p99 {row.frame_p99_ms:.1f} max "
                 f"{row.frame_max_ms:.1f} ms, overruns {row.overruns_per_minute:.1f}/min, ready cold p99 "
                 f"{row.ready_cold_p99_ms:.0f} ms ({row.joins_cold}), cached p99 {row.ready_cached_p99_ms:.1f} ms "
                 f"({row.joins_cached}), {row.memory_gb:.1f} GB" + (f"; {row.joins_failed} joins failed: {row.failure}"
                                                               if row.joins_failed else ""))
    result.rated_calls = max((r.calls for r in result.sizes if r.real_time), default=0)
    return result


def table(result: ChurnBench) -> str:
    lines = [
        f"{result.device}, {result.model}, weights {result.weights}, KV {result.kv_dtype}; calls of "
        f"{result.mean_call_seconds:.0f} s on average, {result.cold_share:.0%} of joins with a new persona",
        "calls | frame p50 | p99  | max   | gap p99 | max   | overruns/min | ready cold p50 | p99 | cached p50 | p99  "
        "| 1st frame cold p99 | cached p99 | joins cold/cached | GB",
    ]
    for r in result.sizes:
        lines.append(
            f"{r.calls:>5} | {r.frame_p50_ms:>9.1f} | {r.frame_p99_ms:>4.1f} | {r.frame_max_ms:>5.1f} | "
            f"{r.gap_p99_ms:>7.1f} | {r.gap_max_ms:>5.1f} | {r.overruns_per_minute:>12.1f} | "
            f"{r.ready_cold_p50_ms:>14.0f} | {r.ready_cold_p99_ms:>3.0f} | {r.ready_cached_p50_ms:>10.1f} | "
            f"{r.ready_cached_p99_ms:>4.1f} | {r.first_frame_cold_p99_ms:>18.0f} | {r.first_frame_cached_p99_ms:>10.0f} | "
            f"{r.joins_cold:>8}/{r.joins_cached:<8} | {r.memory_gb:.1f}")
    lines.append(f"memory bound: {result.memory_bound_calls} calls; rated (frame p99 < {BUDGET_MS:.0f} ms, no "
                 f"overrun, cold ready p99 < {COLD_READY_MS:.0f} ms, under churn): {result.rated_calls}" + (f" ({result.stopped})" if result.stopped else ""))
    return "\n".join(lines)


def write_json(result: ChurnBench, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")
