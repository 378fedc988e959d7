"""The recogniser's cost beside the agent on one GPU: `python -m bench.stt OUT.json [BATCHES...]`.

Full-size dummies in bfloat16: the agent (PersonaPlex 7B, its Mimi encoding 32 codebooks) and the
recogniser (stt-1b-en_fr's sizes, context 750). For each batch size every slot holds a call, and
the clock's step is timed two ways in alternating blocks: the agent alone (`ModelBackend.step`)
and the agent with the recogniser reading its codes (`RecognisingBackend.step`), both ending in
their host sync. Added time is the difference of the medians; the recogniser's step alone is also
timed as its CUDA graph's replay. Where the agent's KV ring at its full 3000 frames would not
leave room for the recogniser, the agent's ring is shortened to fit and the JSON says so (its
step is then a little shorter than at full context, so the percentage is an upper bound).
First, the tiny reference stream on the GPU: float32 tokens against Kyutai's, and bfloat16's
text logits against float32's by relative error. Prints a table last and writes JSON.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from agent.contracts.audio import FRAME_SIZE
from agent.engine.backend import CallSetup
from agent.engine.engine import ModelBackend
from agent.engine.prefix import PersonaPrompt
from agent.engine.stt import RecognisingBackend, SttBackend
from agent.model.checkpoint import dummy_lm, meta_lm
from agent.model.lm import LMConfig
from agent.model.mimi import Mimi, MimiConfig
from agent.model.stt import STT_CODEBOOKS, StreamingStt, SttConfig
from agent.model.stt_loading import dummy_stt_lm, load_stt_lm

REFERENCE = Path(__file__).parents[1] / "tests" / "data" / "stt-tiny"
BLOCK = 40  # steps per block; blocks alternate agent alone / agent with recogniser
BLOCKS = 4
WARMUP = 20
HEADROOM = 6 << 30  # bytes left free when sizing the agent's ring


@dataclass
class BatchResult:
    batch: int
    agent_context: int
    agent_p50_ms: float
    agent_p99_ms: float
    with_stt_p50_ms: float
    with_stt_p99_ms: float
    added_ms: float
    added_percent: float
    stt_graph_ms: float  # the recogniser's step alone, graph replay, p50
    stt_state_gb: float
    memory_gb: float  # peak allocated with both engines


@dataclass
class SttBench:
    device: str
    agent: str = "dummy:full (RANDOM WEIGHTS), bfloat16, Mimi at 32 codebooks"
    stt: str = "dummy:full (RANDOM WEIGHTS), stt-1b-en_fr sizes, bfloat16"
    stt_weights_gb: float = 0.0
    stt_kv_gb_per_call: float = 0.0
    reference_float32_tokens_equal: bool = False
    reference_bf16_logits_rel_error: float = 0.0
    reference_bf16_tokens_agree: float = 0.0
    batches: list[BatchResult] = field(default_factory=list)
    stopped: str = ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def reference_on_gpu(result: SttBench) -> None:
    golden = load_file(REFERENCE / "golden.safetensors", device="cuda")
    config = SttConfig.from_json(REFERENCE / "config.json")
    steps = golden["codes"].shape[-1]
    tokens = {}
    for dtype in (torch.float32, torch.bfloat16):
        backend = SttBackend(load_stt_lm(REFERENCE / "stt.safetensors", config, "cuda", dtype), num_slots=1)
        backend.warm_up()  # captured as a CUDA graph, as served
        backend.join(0)
        tokens[dtype] = torch.stack([backend.advance(golden["codes"][:, :, t])[0].clone() for t in range(steps)], 1)
    result.reference_float32_tokens_equal = torch.equal(tokens[torch.float32], golden["text_tokens"])
    result.reference_bf16_tokens_agree = (tokens[torch.bfloat16] == golden["text_tokens"]).float().mean().item()
    # bfloat16's text logits on the reference's inputs: each step fed the reference's text token.
    stream = StreamingStt(load_stt_lm(REFERENCE / "stt.safetensors", config, "cuda", torch.bfloat16))
    state = stream.init_state(1)
    errors = []
    for t in range(steps):
        out = stream.step(state, golden["codes"][:, :, t])
        state.text.copy_(golden["text_tokens"][:, t])
        reference = golden["text_logits"][:, t]
        errors.append(((out.text_logits - reference).norm() / reference.norm()).item())
    result.reference_bf16_logits_rel_error = max(errors)


def bench_prompt(card: int, text_card: int) -> PersonaPrompt:
    generator = torch.Generator().manual_seed(0)
    voice = torch.randint(0, card, (8, 100), generator=generator)  # 8 s
    role = torch.randint(4, text_card, (80,), generator=generator)
    return PersonaPrompt(voice=voice, text_tokens=tuple(role.tolist()), silence_frames=6)


def timed_steps(step, pcm: torch.Tensor, active: torch.Tensor, n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step(pcm, active)  # ends with the host sync
        times.append((time.perf_counter() - start) * 1000)
    return times


def graph_replay_ms(backend: SttBackend, codes: torch.Tensor, n: int) -> float:
    times = []
    for _ in range(n):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        backend.advance(codes)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return percentile(times, 0.5)


def run_batch(mimi: Mimi, lm_config: LMConfig, stt_lm, batch: int, kv_bytes_per_frame: int) -> BatchResult:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    stt = SttBackend(stt_lm, num_slots=batch)
    stt_state = torch.cuda.memory_allocated() - before
    stt.warm_up()
    free, _ = torch.cuda.mem_get_info()
    weights = sum(p.numel() * p.element_size() for p in meta_lm(lm_config, torch.bfloat16).parameters())
    room = (free - HEADROOM - weights) // (batch * kv_bytes_per_frame)
    context = int(min(lm_config.context, room))
    lm = dummy_lm(dataclasses.replace(lm_config, context=context), device="cuda")
    agent = ModelBackend(mimi, lm, num_slots=batch)
    both = RecognisingBackend(agent, stt)
    agent.warm_up()
    call = CallSetup(prompt=bench_prompt(lm_config.card, lm_config.text_card), seed=7)
    for slot in range(batch):
        both.join(slot, call)
    active = torch.ones(batch, dtype=torch.bool)
    pcm = (torch.randn(batch, FRAME_SIZE) * 0.1).pin_memory()
    timed_steps(both.step, pcm, active, WARMUP)
    alone, with_stt = [], []
    for _ in range(BLOCKS):
        alone += timed_steps(agent.step, pcm, active, BLOCK)
        with_stt += timed_steps(both.step, pcm, active, BLOCK)
    stt_ms = graph_replay_ms(stt, agent.caller_codes, BLOCK)
    agent_p50, both_p50 = percentile(alone, 0.5), percentile(with_stt, 0.5)
    row = BatchResult(batch=batch, agent_context=context, agent_p50_ms=agent_p50, agent_p99_ms=percentile(alone, 0.99),
                      with_stt_p50_ms=both_p50, with_stt_p99_ms=percentile(with_stt, 0.99),
                      added_ms=both_p50 - agent_p50, added_percent=100 * (both_p50 - agent_p50) / agent_p50,
                      stt_graph_ms=stt_ms, stt_state_gb=stt_state / 1e9,
                      memory_gb=torch.cuda.max_memory_allocated() / 1e9)
    del both, agent, stt, lm
    return row


def table(result: SttBench) -> str:
    lines = [
        f"{result.device}; recogniser weights {result.stt_weights_gb:.2f} GB, KV {result.stt_kv_gb_per_call:.3f} GB/call",
        (f"reference on GPU: float32 tokens equal {result.reference_float32_tokens_equal}; bf16 logits rel. error "
         f"{result.reference_bf16_logits_rel_error:.2e}, bf16 tokens agree {result.reference_bf16_tokens_agree:.0%}"),
        "calls | agent ctx | agent p50/p99 ms | +STT p50/p99 ms | added ms | added % | STT graph ms | STT state GB | GB",
    ]
    for r in result.batches:
        lines.append(f"{r.batch:>5} | {r.agent_context:>9} | {r.agent_p50_ms:>7.1f} / {r.agent_p99_ms:<6.1f} | "
                     f"{r.with_stt_p50_ms:>6.1f} / {r.with_stt_p99_ms:<6.1f} | {r.added_ms:>8.2f} | "
                     f"{r.added_percent:>6.1f}% | {r.stt_graph_ms:>12.2f} | {r.stt_state_gb:>12.2f} | {r.memory_gb:.1f}")
    if result.stopped:
        lines.append(result.stopped)
    return "\n".join(lines)


def main(out: Path, batches: list[int]) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    result = SttBench(device=torch.cuda.get_device_name())
    reference_on_gpu(result)
    print(table(result), flush=True)
    mimi_config = dataclasses.replace(MimiConfig.full(), num_codebooks=STT_CODEBOOKS)
    mimi = Mimi.dummy(mimi_config, device="cuda")
    stt_config = SttConfig.stt_1b_en_fr()
    stt_lm = dummy_stt_lm(stt_config, device="cuda")
    result.stt_weights_gb = sum(p.numel() * p.element_size() for p in stt_lm.parameters()) / 1e9
    result.stt_kv_gb_per_call = stt_config.num_layers * 2 * stt_config.dim * 2 * stt_config.context / 1e9
    lm_config = LMConfig.personaplex_7b()
    kv_bytes_per_frame = lm_config.num_layers * 2 * lm_config.dim * 2
    for batch in batches:
        try:
            result.batches.append(run_batch(mimi, lm_config, stt_lm, batch, kv_bytes_per_frame))
        except torch.OutOfMemoryError as error:
            result.stopped = f"out of memory at {batch} calls: {str(error).splitlines()[0]}"
            break
        print(table(result).splitlines()[-1], flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(table(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(b) for b in sys.argv[2:]] or [1, 32, 80])
