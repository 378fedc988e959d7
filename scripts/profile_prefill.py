"""Where a cold persona's prefill forward spends its time (run on a CUDA machine):
`PYTHONPATH=. python3 scripts/profile_prefill.py [FRAMES] [WEIGHTS bf16|fp8] [KV bf16|fp8]`.

The engine launches a prefill chunk behind the step (agent/engine/engine.py) and paces it by its
device time (agent/engine/pacer.py): this prints, for one forward of FRAMES prompt steps on the
full-size dummy, the host's launch time, the device time alone (queued behind a spin, as the pacer
calibrates) and the device time when launched without one, every op that waits for the device
(with where it is called), then the ops by device time and by host time.
"""

from __future__ import annotations

import sys
import time
import traceback
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from agent.engine.engine import ModelBackend
from agent.engine.pacer import SPIN_CYCLES
from agent.model.loading import load_models


def main() -> None:
    frames = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    weights = sys.argv[2] if len(sys.argv) > 2 else "bf16"
    kv_dtype = sys.argv[3] if len(sys.argv) > 3 else "bf16"
    models = load_models("dummy:full", "cuda", weights=weights)
    backend = ModelBackend(models.mimi, models.lm, num_slots=8, kv_dtype=kv_dtype)
    forward = backend._calibration_forward
    with torch.no_grad():
        for _ in range(2):
            forward(frames)
        torch.cuda.synchronize()
        for spin in (True, False):
            if spin:
                torch.cuda._sleep(SPIN_CYCLES)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            launch = time.perf_counter()
            forward(frames)
            launched = time.perf_counter() - launch
            end.record()
            end.synchronize()
            print(f"{weights} weights, {kv_dtype} KV, {frames} frames, {'behind a spin' if spin else 'no spin'}: "
                  f"host launch {launched * 1000:.1f} ms, device {start.elapsed_time(end):.1f} ms")
        with warnings.catch_warnings():  # every op that makes the host wait for the device, and where
            warnings.simplefilter("always")
            warnings.showwarning = show_where
            torch.cuda.set_sync_debug_mode("warn")
            forward(frames)
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            forward(frames)
            torch.cuda.synchronize()
    averages = prof.key_averages()
    print(averages.table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=70))
    print(averages.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=70))


def show_where(message, category, filename, lineno, file=None, line=None) -> None:
    frames = [f for f in traceback.extract_stack() if "/agent/" in f.filename or "/scripts/" in f.filename]
    print(f"host sync: {message}; " + " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames[-6:])))


if __name__ == "__main__":
    main()
