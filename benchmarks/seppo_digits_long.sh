#!/usr/bin/env bash
# Regenerates benchmarks/seppo_digits_long/report.md: the issue's 15-minute target for SePPO on the
# embedded digits task (gold accuracy >= 0.92, diversity >= 0.7x the base's, no reward model in
# training). SePPO's loss and v1's flip criterion with the newest snapshot as the reference
# (reference.mode=latest, a snapshot every 10 steps), 1000 steps, seeds 0 1 2: about 14 minutes per
# run on 2 CPU cores (three runs one after another, on an otherwise idle machine).
# Usage: bash benchmarks/seppo_digits_long.sh [OUT_DIR]   (default runs/seppo_digits_long)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/seppo_digits_long}
genrl=${GENRL:-.venv/bin/genrl}
$genrl compare --seeds 0 1 2 --out "$out" \
  --set log.progress_bar=false checkpoint.every=0 \
  --arm seppo_latest_1000 configs/digits/seppo.yaml reference.mode=latest reference.snapshot_every=10 \
  max_steps=1000 eval.every=250
mkdir -p benchmarks/seppo_digits_long
cp "$out"/report.md "$out"/*.png benchmarks/seppo_digits_long/
echo "report: benchmarks/seppo_digits_long/report.md"
