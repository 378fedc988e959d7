#!/usr/bin/env bash
# Calls per GPU, on one CUDA host (a GPU host's python3 with torch is enough: no service packages):
# the lockstep engine benchmark and the churn benchmark beside it, in one process each, for bf16 and
# for the 8-bit precisions (FP8 weights and KV ring). JSON and logs under OUT (default ./capacity).
#   bash scripts/gpu_capacity.sh [OUT]
# Sizes and seconds per size: BF16_CALLS, FP8_CALLS, CHURN_SECONDS, LOCKSTEP_STEPS.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-capacity}
mkdir -p "$out"
export PYTHONPATH=. PYTHONUNBUFFERED=1
bench="python3 -m plexline bench"
seconds=${CHURN_SECONDS:-30}
steps=${LOCKSTEP_STEPS:-100}

run() {  # name, then the benchmark's arguments
  local name=$1
  shift
  $bench "$@" --json "$out/$name.json" 2>&1 | tee "$out/$name.log" | tail -12
}

run churn-bf16 churn --calls "${BF16_CALLS:-64,72,79}" --seconds "$seconds"
run engine-bf16 engine --batches "${BF16_CALLS:-64,72,79}" --steps "$steps"
run churn-fp8 churn --weights fp8 --kv-dtype fp8 --calls "${FP8_CALLS:-120,140,160}" --seconds "$seconds"
run engine-fp8 engine --weights fp8 --kv-dtype fp8 --batches "${FP8_CALLS:-120,140,160}" --steps "$steps"
