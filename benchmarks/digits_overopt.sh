#!/usr/bin/env bash
# Regenerates benchmarks/digits_overopt/: FlowGRPO, FlowGRPO-CPS, GRPO-Guard and SAGE-GRPO on the digits
# task, in the normal setting (proxy = the digit classifier) and the hackable one (proxy also
# pays for ink), with `genrl compare`. About 27 minutes per seed on 2 CPU cores.
# Usage: bash benchmarks/digits_overopt.sh [SEEDS...]   (default: 0)
set -euo pipefail
cd "$(dirname "$0")/.."
genrl=${GENRL:-.venv/bin/genrl}
seeds=${*:-0}
configs="configs/digits/flowgrpo.yaml configs/digits/flowgrpo_cps.yaml configs/digits/guard.yaml configs/digits/sage.yaml"
$genrl compare $configs --seeds $seeds --out runs/cmp_normal --set log.progress_bar=false
$genrl compare $configs --seeds $seeds --out runs/cmp_ink --set log.progress_bar=false \
  'rewards={digits_ink: 1.0}' 'reward_args={digits_ink: {ink_weight: 1.0}}'
for s in normal ink; do
  mkdir -p benchmarks/digits_overopt/$s
  cp runs/cmp_$s/report.md runs/cmp_$s/*.png benchmarks/digits_overopt/$s/
done
