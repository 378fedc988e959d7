"""`plexline bench engine` for bf16 and for FP8 weights and KV, in one process on one GPU:
`PYTHONPATH=. python3 scripts/bench_precisions.py OUT.json [STEPS]`.

bf16 at 80 calls, then the same weights quantised to FP8 at load's rule (in place) with an FP8 KV
ring at 80 and 160 calls; both results in one JSON, both tables printed. Plain torch: no service
imports, so it runs on a GPU host that has only torch.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from agent.model.loading import load_models
from bench.engine import bench_engine, table


def main(out: Path, steps: int) -> None:
    models = load_models("dummy:full", "cuda")
    runs = [bench_engine(models, [80], steps, warmup=20)]
    models.lm.to_fp8_weights()
    models.weights = "fp8"
    torch.cuda.empty_cache()
    runs.append(bench_engine(models, [80, 160], steps, warmup=20, kv_dtype="fp8"))
    out.write_text(json.dumps([asdict(run) for run in runs], indent=2) + "\n")
    for run in runs:
        print(table(run))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 300)
