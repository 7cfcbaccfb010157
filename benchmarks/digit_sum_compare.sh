#!/usr/bin/env bash
# Regenerates benchmarks/digit_sum_rl.md's table: continued SFT vs SFT+GRPO vs SFT+SAPO vs
# SFT+SAPO+VAS on digit_sum, same seed, same SFT start (configs/digit_sum/sft.yaml, trained
# first if missing), run one after another on an otherwise idle machine (runs share no CPU).
# Usage: bash benchmarks/digit_sum_compare.sh [OUT_DIR]   (about 40 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/digit_sum_compare}
genrl=${GENRL:-.venv/bin/genrl}
$genrl train configs/digit_sum/sft.yaml >/dev/null   # the shared cold start (no-op when present)
for n in grpo sapo sapo_vas; do
  start=$(date +%s)
  $genrl train configs/digit_sum/$n.yaml output_dir=$out/$n log.progress_bar=false > $out.$n.log 2>&1
  echo "$n wall $(( $(date +%s) - start ))" >> $out.$n.log
done
# the control: continued SFT from the same checkpoint at the decayed learning rate, about the same wall time
start=$(date +%s)
$genrl train configs/digit_sum/sft.yaml model=runs/digit_sum_sft/model output_dir=$out/sft_cont max_steps=7000 \
  train.lr=1.5e-4 train.lr_schedule=constant train.warmup_steps=0 eval.every=1000 log.progress_bar=false > $out.sft_cont.log 2>&1
echo "sft_cont wall $(( $(date +%s) - start ))" >> $out.sft_cont.log
.venv/bin/python benchmarks/digit_sum_report.py "$out"
