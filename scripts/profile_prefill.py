"""Where a cold persona's prefill forward spends its time (run on a CUDA machine):
`PYTHONPATH=. python3 scripts/profile_prefill.py [FRAMES] [WEIGHTS bf16|fp8] [KV bf16|fp8]`.

The engine launches a prefill chunk behind the step (agent/engine/engine.py) and paces it by its
device time (agent/engine/pacer.py): this prints, for one forward of FRAMES prompt steps on the
full-size dummy, the host's launch time, the device time alone (queued behind a spin, as the pacer
calibrates) and the device time when launched without one, then the kernels by device time.
"""

from __future__ import annotations

import sys
import time

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
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            forward(frames)
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=90))


if __name__ == "__main__":
    main()
