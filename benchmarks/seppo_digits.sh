#!/usr/bin/env bash
# Regenerates benchmarks/seppo_digits/report.md: SePPO and its controls on the embedded digits task
# at equal training wall time (genrl compare --wall-budget: a 20-step calibration run per arm sets
# its steps), 3 seeds each, no reward model in any preference arm's training (the proxy and gold
# judges only score evaluations); FlowGRPO on the proxy reward for scale. sft reads no beta: its arm
# sets the recipe's back to the default (a setting nothing reads is refused).
# Usage: bash benchmarks/seppo_digits.sh [OUT_DIR] [SECONDS]
#   (defaults: runs/seppo_digits, 150 s of training per run; about 60 minutes on 2 CPU cores, on an
#   otherwise idle machine: the budget is wall time)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/seppo_digits}
budget=${2:-150}
genrl=${GENRL:-.venv/bin/genrl}
seppo=configs/digits/seppo.yaml
$genrl compare --seeds 0 1 2 --out "$out" --wall-budget "$budget" --evals 4 \
  --set log.progress_bar=false checkpoint.every=0 \
  --arm seppo $seppo \
  --arm seppo_no_criterion $seppo objective.criterion=none \
  --arm seppo_fixed_ref $seppo reference.mode=fixed \
  --arm seppo_latest_ref $seppo reference.mode=latest reference.snapshot_every=10 \
  --arm diffusion_dpo $seppo objective.name=diffusion_dpo reference.mode=fixed \
  --arm sft $seppo objective.name=sft objective.beta=2000.0 train.lr=1e-3 \
  --arm flowgrpo_proxy configs/digits/flowgrpo.yaml
mkdir -p benchmarks/seppo_digits
cp "$out"/report.md "$out"/*.png benchmarks/seppo_digits/
echo "report: benchmarks/seppo_digits/report.md"
