#!/usr/bin/env bash
# Regenerates benchmarks/digits_overopt/: FlowGRPO, FlowGRPO-CPS, GRPO-Guard and SAGE-GRPO on the
# digits task, in the normal setting (proxy = the digit classifier) and the hackable one (proxy
# also pays for ink), with `genrl compare`; then SAGE-GRPO without its trust region (beta 0) on
# the first seed of both settings. About 27 minutes per seed plus 7 for the ablation on 2 CPU
# cores with nothing else running.
# Usage: bash benchmarks/digits_overopt.sh [SEEDS...]   (default: 0)
set -euo pipefail
cd "$(dirname "$0")/.."
genrl=${GENRL:-.venv/bin/genrl}
seeds=${*:-0}
first=${seeds%% *}
ink=('rewards={digits_ink: 1.0}' 'reward_args={digits_ink: {ink_weight: 1.0}}')
configs="configs/digits/flowgrpo.yaml configs/digits/flowgrpo_cps.yaml configs/digits/guard.yaml configs/digits/sage.yaml"
$genrl compare $configs --seeds $seeds --out runs/cmp_normal --set log.progress_bar=false
$genrl compare $configs --seeds $seeds --out runs/cmp_ink --set log.progress_bar=false "${ink[@]}"
for s in normal ink; do  # the ablation reuses the study's SAGE run of the first seed
  mkdir -p runs/abl_$s && ln -sfn ../cmp_$s/sage-seed$first runs/abl_$s/sage-seed$first
done
abl="configs/digits/sage.yaml configs/digits/sage_no_kl.yaml"
$genrl compare $abl --seeds $first --out runs/abl_normal --set log.progress_bar=false
$genrl compare $abl --seeds $first --out runs/abl_ink --set log.progress_bar=false "${ink[@]}"
for s in normal ink; do
  mkdir -p benchmarks/digits_overopt/$s benchmarks/digits_overopt/sage_ablation_$s
  cp runs/cmp_$s/report.md runs/cmp_$s/*.png benchmarks/digits_overopt/$s/
  cp runs/abl_$s/report.md runs/abl_$s/*.png benchmarks/digits_overopt/sage_ablation_$s/
done
