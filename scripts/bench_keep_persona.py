"""`bench_keep_persona` of `bench.engine` at 80 calls, full-size dummy weights in bf16, on one GPU:
`PYTHONPATH=. python3 scripts/bench_keep_persona.py OUT.json [STEPS] [ROUNDS]`.

Plain torch: no service imports, so it runs on a GPU host that has only torch.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from agent.model.loading import load_models
from bench.engine import bench_keep_persona, keep_persona_table


def main(out: Path, steps: int, rounds: int) -> None:
    models = load_models("dummy:full", "cuda")
    result = bench_keep_persona(models, 80, steps, warmup=20, rounds=rounds)
    out.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(keep_persona_table(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 150, int(sys.argv[3]) if len(sys.argv) > 3 else 2)
