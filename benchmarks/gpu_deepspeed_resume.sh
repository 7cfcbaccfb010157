#!/usr/bin/env bash
# GPU check (accelerate runs DeepSpeed on GPUs only): genrl's trainer under DeepSpeed ZeRO-2
# (configs/accelerate/deepspeed_zero2.yaml) on the digits FlowGRPO recipe, once straight through
# 6 steps and once SIGKILLed after its step-3 checkpoint and rerun; the two final checkpoints must be
# equal tensor for tensor (weights, every process's optimizer partition, EMA, sampler) and the metrics
# rows identical. Uses every visible GPU (NPROC to override); prints PASS or exits non-zero.
# train.full_determinism=true: GPU kernels with atomics (attention and convolution backward) would
# otherwise make even two uninterrupted runs differ in the last bits, and the check could not tell.
# Usage: bash benchmarks/gpu_deepspeed_resume.sh [OUT_DIR]   (default runs/gpu_deepspeed_resume)
# ACCELERATE_CONFIG=... runs it under another launch config (a CPU dry run of the script's steps).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_deepspeed_resume}
py=${PYTHON:-python}
n=${NPROC:-$($py -c 'import torch; print(max(1, torch.cuda.device_count()))')}
rm -rf "$out"
launch=($py -m accelerate.commands.launch --config_file "${ACCELERATE_CONFIG:-configs/accelerate/deepspeed_zero2.yaml}"
  --num_processes "$n" -m genrl.cli train configs/digits/flowgrpo.yaml max_steps=6 checkpoint.every=3 eval.every=0
  train.full_determinism=true log.report_to=[] log.progress_bar=false)
"${launch[@]}" output_dir="$out/straight"

"${launch[@]}" output_dir="$out/part" &
pid=$!
until [ -f "$out/part/checkpoints/step-000003/meta.json" ]; do
  kill -0 $pid 2>/dev/null || { echo "FAIL: the run to be killed ended before its step-3 checkpoint" >&2; exit 1; }
  sleep 0.5
done
pkill -KILL -f "output_dir=$out/part" || true
wait || true
"${launch[@]}" output_dir="$out/part"

$py - "$out" <<'EOF'
import json, os, sys
sys.path.insert(0, "tests")  # the test suite's own bit-for-bit comparison
from genrl.checkpoint import latest_checkpoint, load_checkpoint
from state_compare import assert_same_state, metrics_rows

out = sys.argv[1]
a, b = (latest_checkpoint(f"{out}/{d}/checkpoints") for d in ("straight", "part"))
meta = json.load(open(f"{a}/meta.json"))
ranks = range(meta.get("world_size", 1))
first = load_checkpoint(a, 0 if "world_size" in meta else None, len(ranks))
dry = os.environ.get("ACCELERATE_CONFIG")
assert dry or "zero_stage" in first["optimizer"], "the run did not use DeepSpeed ZeRO (accelerate runs it on GPUs only)"
for r in ranks:
    rank = r if "world_size" in meta else None
    assert_same_state(load_checkpoint(a, rank, len(ranks)), load_checkpoint(b, rank, len(ranks)), f"rank{r}")
assert metrics_rows(f"{out}/straight") == metrics_rows(f"{out}/part"), "metrics differ"
what = f"launch config {dry}" if dry else "DeepSpeed ZeRO-2"
print(f"PASS: {what}, {len(ranks)} process(es), killed after step 3, resumed: final checkpoint and metrics equal")
EOF
