#!/usr/bin/env bash
# Reproduce chapter 1's shipped checkpoints (about 25 min per model on 2 cores) and the independent
# digit evaluator (about 1 min).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch1.sh tutorial-ddpm tutorial-ddpm-fixed
${PY:-.venv/bin/python} scripts/train_evaluator.py
