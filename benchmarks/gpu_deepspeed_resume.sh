#!/usr/bin/env bash
# GPU check (accelerate runs DeepSpeed on GPUs only): genrl's trainer under DeepSpeed ZeRO-2
# (configs/accelerate/deepspeed_zero2.yaml) on the digits FlowGRPO recipe, once straight through
# 6 steps and once SIGKILLed after its step-3 checkpoint and rerun; the two final checkpoints must be
# equal tensor for tensor (weights, every process's optimizer partition, EMA, sampler) and the metrics
# rows identical. Uses every visible GPU (NPROC to override); prints PASS or exits non-zero.
# Usage: bash benchmarks/gpu_deepspeed_resume.sh [OUT_DIR]   (default runs/gpu_deepspeed_resume)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu_deepspeed_resume}
py=${PYTHON:-python}
n=${NPROC:-$($py -c 'import torch; print(max(1, torch.cuda.device_count()))')}
rm -rf "$out"
launch=($py -m accelerate.commands.launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes "$n"
  -m genrl.cli train configs/digits/flowgrpo.yaml max_steps=6 checkpoint.every=3 eval.every=0
  log.report_to=[] log.progress_bar=false)
"${launch[@]}" output_dir="$out/straight"

"${launch[@]}" output_dir="$out/part" &
until [ -f "$out/part/checkpoints/step-000003/meta.json" ]; do sleep 0.5; done
pkill -KILL -f "output_dir=$out/part" || true
wait || true
"${launch[@]}" output_dir="$out/part"

$py - "$out" <<'EOF'
import json, sys
sys.path.insert(0, "tests")  # the test suite's own bit-for-bit comparison
from genrl.checkpoint import latest_checkpoint, load_checkpoint
from state_compare import assert_same_state, metrics_rows

out = sys.argv[1]
a, b = (latest_checkpoint(f"{out}/{d}/checkpoints") for d in ("straight", "part"))
meta = json.load(open(f"{a}/meta.json"))
ranks = range(meta.get("world_size", 1))
first = load_checkpoint(a, 0 if "world_size" in meta else None, len(ranks))
assert "zero_stage" in first["optimizer"], "the run did not use DeepSpeed ZeRO (accelerate runs it on GPUs only)"
for r in ranks:
    rank = r if "world_size" in meta else None
    assert_same_state(load_checkpoint(a, rank, len(ranks)), load_checkpoint(b, rank, len(ranks)), f"rank{r}")
assert metrics_rows(f"{out}/straight") == metrics_rows(f"{out}/part"), "metrics differ"
print(f"PASS: DeepSpeed ZeRO-2, {len(ranks)} process(es), killed after step 3, resumed: final checkpoint equal")
EOF
