#!/usr/bin/env bash
# Train each named config with 2 CPU threads into runs/<config>, then publish its EMA weights (fp16
# safetensors + config JSON) into data/checkpoints/ with a MANIFEST.json entry (command, steps, seed,
# wall time, sha256, final losses). RESUME=1 continues interrupted runs exactly.
# A config written stage:NAME is a first training stage: its weights are exported to
# runs/NAME/export/NAME.safetensors, where the next stage's train.init_from finds them, and not published.
# Usage: scripts/train_checkpoints.sh RECORDED_COMMAND CONFIG|stage:CONFIG [...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
command=$1
shift
for arg in "$@"; do
  cfg=${arg#stage:}
  $PY -m glide_minimal.cli train --config "$cfg" --out "runs/$cfg" --threads 2 --no-progress ${RESUME:+--resume}
  if [ "$arg" != "$cfg" ]; then
    $PY scripts/publish_checkpoint.py --run "runs/$cfg" --export "runs/$cfg/export/$cfg.safetensors"
  else
    $PY scripts/publish_checkpoint.py --run "runs/$cfg" --name "$cfg" --command "$command"
  fi
done
