#!/usr/bin/env bash
# Reproduce chapter 1's shipped checkpoints (2 CPU threads; about 25 min per model on 2 cores).
# Each run trains with the recorded config, then publish_checkpoint.py exports the EMA weights (fp16
# safetensors + config JSON) into data/checkpoints/ and records command, steps, seed, wall time,
# sha256 and metrics in data/checkpoints/MANIFEST.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for cfg in tutorial-ddpm tutorial-ddpm-fixed; do
  $PY -m glide_minimal.cli train --config "$cfg" --out "runs/$cfg" --threads 2 --no-progress ${RESUME:+--resume}
  $PY scripts/publish_checkpoint.py --run "runs/$cfg" --name "$cfg" --command "scripts/train_ch1.sh"
done
$PY scripts/train_evaluator.py --out data/checkpoints/digits-evaluator.safetensors
