#!/usr/bin/env bash
# Regenerates benchmarks/moving_digits/: FlowGRPO, FlowGRPO-CPS and SAGE-GRPO on the embedded
# moving_digits text-to-video task (configs/moving_digits/{flowgrpo,flowgrpo_cps,sage}.yaml, equal
# steps), with `genrl compare`: VideoAlign's VQ / MQ / TA, the gold judge (TA accuracy, identity,
# direction, straightness, jerk, travel) at the end and at matched reward, the noise std and the
# output-gradient norm per denoising step, and the gradient-norm spread against steps.
# The base and the reward are built first if missing (`genrl prepare moving_digits`).
# Usage: bash benchmarks/moving_digits_compare.sh [SEEDS...]   (default: 0 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
genrl=${GENRL:-.venv/bin/genrl}
seeds=${*:-0 1 2}
configs="configs/moving_digits/flowgrpo.yaml configs/moving_digits/flowgrpo_cps.yaml configs/moving_digits/sage.yaml"
$genrl prepare moving_digits
$genrl compare $configs --seeds $seeds --out runs/cmp_moving_digits --set log.progress_bar=false
mkdir -p benchmarks/moving_digits
cp runs/cmp_moving_digits/report.md runs/cmp_moving_digits/*.png benchmarks/moving_digits/
