"""`plexline bench engine`: whole-frame latency of the batched engine per batch size, and time to ready.

For each batch size every slot holds a call (one persona: an 8 s voice and an 80-token role), and
the engine steps them all, as the clock would, for `steps` frames after a warm-up. A frame is the
whole step: caller PCM to the device, Mimi encode, LM step with the depformer, Mimi decode, agent
PCM back. The KV rings are allocated at full context, and attention reads all of them every step
whatever a call's age, so the numbers hold for calls at any point of their 240 s context.
Prints a table last and writes JSON.

`bench_keep_persona` times one batch size with each way of keeping the persona side by side in one
process, alternating them in rounds: upstream's ring (a ring that cannot pin, PyTorch's attention),
window calls in a ring that can pin, and pinned calls (`agent.model.kv_cache`: one extra query per
row). Attention reads every slot whatever a call's age, so the calls need not be past the wrap.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from agent.contracts.audio import FRAME_SIZE
from agent.engine.backend import CallSetup
from agent.engine.capacity import kv_bytes_per_slot
from agent.model.kv_cache import KVDtype
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrompt
from agent.model.loading import Models

BUDGET_MS = 80.0
VOICE_FRAMES = 100  # 8 s
ROLE_TOKENS = 80


@dataclass
class BatchResult:
    batch: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    memory_gb: float
    floor_ms: float  # weights + KV read once per step, at the measured copy bandwidth
    encode_ms: float = 0.0  # p50 of each part alone, each captured as its own CUDA graph
    lm_ms: float = 0.0
    decode_ms: float = 0.0


@dataclass
class EngineBench:
    device: str
    model: str
    weights: str  # the LM's linear layers: bf16 or fp8
    kv_dtype: str  # the KV ring: bf16 or fp8
    steps: int
    copy_bandwidth_tbs: float
    weights_gb: float
    kv_gb_per_call: float
    ready_cold_ms: float = 0.0
    ready_cached_ms: float = 0.0
    single_call_p50_ms: float = 0.0
    max_batch_under_budget: int = 0
    batches: list[BatchResult] = field(default_factory=list)
    stopped: str = ""


def bench_prompt(models: Models, seed: int = 0) -> PersonaPrompt:
    generator = torch.Generator().manual_seed(seed)
    voice = torch.randint(0, models.lm.config.card, (8, VOICE_FRAMES), generator=generator)
    role = torch.randint(4, models.lm.config.text_card, (ROLE_TOKENS,), generator=generator)
    return PersonaPrompt(voice=voice, text_tokens=tuple(role.tolist()))


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read and written."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device).random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / 10
    return 2 * src.numel() / seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_ready(models: Models, call: CallSetup, kv_dtype: KVDtype = "bf16") -> tuple[float, float]:
    """Milliseconds from join to ready: cold (prefill) and cached (copy of the prefix)."""
    backend = ModelBackend(models.mimi, models.lm, num_slots=1, kv_dtype=kv_dtype)

    def timed_join(setup: CallSetup) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        backend.join(0, setup)
        torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000

    timed_join(CallSetup(prompt=bench_prompt(models, seed=1)))  # first use of every kernel
    cold = timed_join(call)
    cached = min(timed_join(call) for _ in range(10))
    return cold, cached


def run_batch(models: Models, batch: int, steps: int, warmup: int, call: CallSetup,
              kv_dtype: KVDtype = "bf16", pin_personas: bool = False) -> tuple[list[float], dict]:
    backend = ModelBackend(models.mimi, models.lm, num_slots=batch, kv_dtype=kv_dtype, pin_personas=pin_personas)
    backend.warm_up()
    for slot in range(batch):
        backend.join(slot, call)
    active = torch.ones(batch, dtype=torch.bool)
    pcm = (torch.randn(batch, FRAME_SIZE) * 0.1).pin_memory()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        backend.step(pcm, active)  # ends with the output's copy to the host: a full sync
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return times, part_times(backend, steps // 5)


def part_times(backend: ModelBackend, steps: int) -> dict[str, float]:
    """p50 milliseconds of Mimi encode, the LM step and Mimi decode, each replayed as its own graph."""
    codes = torch.zeros(backend.num_slots, 8, dtype=torch.long, device=backend.device)
    parts = {
        "encode_ms": lambda: backend.mimi.encode_step(backend._pcm_in, backend.encoder_state),
        "lm_ms": lambda: backend.generate(codes),
        "decode_ms": lambda: backend.mimi.decode_step(codes[:, :, None], backend.decoder_state),
    }
    result = {}
    for name, fn in parts.items():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        times = []
        for _ in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        result[name] = percentile(times, 0.5)
    return result


def bench_engine(models: Models, batches: list[int], steps: int, warmup: int, kv_dtype: KVDtype = "bf16",
                 progress=print) -> EngineBench:
    device = models.device
    cfg = models.lm.config
    dtype = models.lm.text_linear.weight.dtype
    weights = sum(t.numel() * t.element_size() for t in (*models.lm.parameters(), *models.lm.buffers()))
    kv = kv_bytes_per_slot(cfg, dtype, kv_dtype)
    bandwidth = copy_bandwidth(device)
    result = EngineBench(device=torch.cuda.get_device_name(device), model=models.name, weights=models.weights,
                         kv_dtype=kv_dtype, steps=steps, copy_bandwidth_tbs=bandwidth / 1e12, weights_gb=weights / 1e9, kv_gb_per_call=kv / 1e9)
    call = CallSetup(prompt=bench_prompt(models), seed=7)

    result.ready_cold_ms, result.ready_cached_ms = time_ready(models, call, kv_dtype)
    progress(f"ready: cold {result.ready_cold_ms:.1f} ms, cached {result.ready_cached_ms:.2f} ms")

    for batch in batches:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            times, parts = run_batch(models, batch, steps, warmup, call, kv_dtype)
        except torch.OutOfMemoryError:
            result.stopped = f"out of memory at {batch} calls"
            progress(result.stopped)
            break
        row = BatchResult(batch=batch, p50_ms=percentile(times, 0.5), p99_ms=percentile(times, 0.99),
                          max_ms=max(times), memory_gb=torch.cuda.max_memory_allocated(device) / 1e9,
                          floor_ms=(weights + batch * kv) / bandwidth * 1000, **parts)
        result.batches.append(row)
        progress(f"{batch:>3} calls: p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms, max {row.max_ms:.1f} ms, "
                 f"{row.memory_gb:.1f} GB; encode {row.encode_ms:.1f}, LM {row.lm_ms:.1f}, decode {row.decode_ms:.1f} ms")
    under = [r.batch for r in result.batches if r.p99_ms < BUDGET_MS]
    result.max_batch_under_budget = max(under, default=0)
    single = [r for r in result.batches if r.batch == 1]
    result.single_call_p50_ms = single[0].p50_ms if single else 0.0
    return result


def table(result: EngineBench) -> str:
    lines = [
        f"{result.device}, {result.model}, weights {result.weights}, KV {result.kv_dtype}, "
        f"{result.steps} steps per batch size",
        f"weights {result.weights_gb:.2f} GB, KV {result.kv_gb_per_call:.2f} GB per call, "
        f"copy bandwidth {result.copy_bandwidth_tbs:.2f} TB/s",
        f"ready: cold {result.ready_cold_ms:.1f} ms, cached {result.ready_cached_ms:.2f} ms "
        f"(8 s voice + {ROLE_TOKENS}-token role)",
        "calls | frame p50 ms | p99 ms | max ms | enc | LM   | dec | LM floor ms | GB",
    ]
    for r in result.batches:
        lines.append(f"{r.batch:>5} | {r.p50_ms:>12.1f} | {r.p99_ms:>6.1f} | {r.max_ms:>6.1f} | {r.encode_ms:>3.1f} | "
                     f"{r.lm_ms:>4.1f} | {r.decode_ms:>3.1f} | {r.floor_ms:>11.1f} | {r.memory_gb:>4.1f}")
    lines.append(f"largest batch with p99 < {BUDGET_MS:.0f} ms: {result.max_batch_under_budget}"
                 + (f" ({result.stopped})" if result.stopped else ""))
    return "\n".join(lines)


def write_json(result: EngineBench, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")


# (name, the engine's ring can pin, the calls' keep_persona)
KEEP_PERSONA_SETTINGS = (("window", False, "window"), ("window, ring that pins", True, "window"),
                         ("pinned", True, "pinned"))


@dataclass
class KeepPersonaRow:
    setting: str
    p50_ms: float
    p99_ms: float
    lm_ms: float  # p50 of the LM step alone, over the rounds


@dataclass
class KeepPersonaBench:
    device: str
    model: str
    weights: str
    kv_dtype: str
    batch: int
    steps: int  # timed steps per setting and round
    rounds: int
    prompt_frames: int
    rows: list[KeepPersonaRow] = field(default_factory=list)
    pinned_over_window: float = 0.0  # frame p50 of pinned calls over upstream's ring


def bench_keep_persona(models: Models, batch: int, steps: int, warmup: int, rounds: int,
                       kv_dtype: KVDtype = "bf16", progress=print) -> KeepPersonaBench:
    call = CallSetup(prompt=bench_prompt(models), seed=7)
    result = KeepPersonaBench(device=torch.cuda.get_device_name(models.device), model=models.name,
                              weights=models.weights, kv_dtype=kv_dtype, batch=batch, steps=steps, rounds=rounds,
                              prompt_frames=call.prompt.frames)
    times: dict[str, list[float]] = {name: [] for name, _, _ in KEEP_PERSONA_SETTINGS}
    lm: dict[str, list[float]] = {name: [] for name, _, _ in KEEP_PERSONA_SETTINGS}
    for round_ in range(rounds):
        for name, pin_personas, keep_persona in KEEP_PERSONA_SETTINGS:
            torch.cuda.empty_cache()
            frame, parts = run_batch(models, batch, steps, warmup, replace(call, keep_persona=keep_persona),
                                     kv_dtype, pin_personas=pin_personas)
            times[name] += frame
            lm[name].append(parts["lm_ms"])
            progress(f"round {round_ + 1}, {name}: frame p50 {percentile(frame, 0.5):.2f} ms, "
                     f"LM {parts['lm_ms']:.2f} ms")
    for name, _, _ in KEEP_PERSONA_SETTINGS:
        result.rows.append(KeepPersonaRow(name, percentile(times[name], 0.5), percentile(times[name], 0.99),
                                          percentile(lm[name], 0.5)))
    result.pinned_over_window = result.rows[-1].p50_ms / result.rows[0].p50_ms
    return result


def keep_persona_table(result: KeepPersonaBench) -> str:
    lines = [(f"{result.device}, {result.model}, weights {result.weights}, KV {result.kv_dtype}, "
              f"{result.batch} calls, {result.rounds} rounds of {result.steps} steps, "
              f"{result.prompt_frames}-frame persona prompt"),
             "setting                | frame p50 ms | p99 ms | LM ms"]
    for r in result.rows:
        lines.append(f"{r.setting:<22} | {r.p50_ms:>12.2f} | {r.p99_ms:>6.2f} | {r.lm_ms:>5.2f}")
    lines.append(f"pinned / window frame p50: {result.pinned_over_window:.4f}")
    return "\n".join(lines)
