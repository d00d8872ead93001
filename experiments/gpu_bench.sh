#!/usr/bin/env bash
# The GPU leg of BENCHMARKS.md: the main job on CUDA (eager, then with --compile cudagraphs), then
# `dtd bench --device cuda` for fp32 / bf16 eager and the torch.compile and CUDA-graph variants.
# Each step has its own time limit and writes its own JSON, so a slow compilation costs only its own
# row. The variants run in separate processes, a few at a time, because each torch.compile of the
# training step takes 20-40 s on a cold cache.
#
#   OUT=gpu-bench bash experiments/gpu_bench.sh      # needs a CUDA GPU and dtd installed (or PYTHONPATH=src)
set -uo pipefail
OUT=${OUT:-gpu-bench}
mkdir -p "$OUT"
DTD=${DTD:-python3 -m dtd}
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.txt"

step() {  # step NAME SECONDS COMMAND...: run, log, report the exit status and the wall time
  local name=$1 limit=$2 t0
  shift 2
  t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: rc $? in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/$name.log"
}

step main-job 150 $DTD train --device cuda --no-progress --out_dir "$OUT/runs" --run_name main-job --force
step main-job-cudagraphs 170 $DTD train --device cuda --compile cudagraphs --no-progress --out_dir "$OUT/runs" \
  --run_name main-job-cudagraphs --force
BENCH="$DTD bench --device cuda --presets dtd --eval-workers 1 --no-progress"
ONLY_TRAIN="--no-naive --eval-episodes 1 --reference-episodes 1 --eval-max-steps 20"  # skip the curve
step bench 150 $BENCH --batch-sizes 64,256 --variants bf16 --out "$OUT/bench-b64-b256-bf16.json"
step compile-b256 250 $BENCH $ONLY_TRAIN --batch-sizes 256 --variants compile,cudagraphs \
  --out "$OUT/bench-b256-compile-cudagraphs.json"
step compile-b64 100 $BENCH $ONLY_TRAIN --batch-sizes 64 --variants compile,cudagraphs \
  --out "$OUT/bench-b64-compile-cudagraphs.json"
step compile-bf16-b256 110 $BENCH $ONLY_TRAIN --batch-sizes 256 --variants compile+bf16,cudagraphs+bf16 \
  --out "$OUT/bench-b256-compile-cudagraphs-bf16.json"
