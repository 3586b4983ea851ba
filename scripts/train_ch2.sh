#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapters 2-3 (2 CPU threads): the class-conditional digits
# model (20 % null labels, so it also serves classifier-free guidance) and the noised classifier.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for cfg in tutorial-digits tutorial-digits-classifier; do
  $PY -m glide_minimal.cli train --config "$cfg" --out "runs/$cfg" --threads 2 --no-progress ${RESUME:+--resume}
  $PY scripts/publish_checkpoint.py --run "runs/$cfg" --name "$cfg" --command "scripts/train_ch2.sh"
done
