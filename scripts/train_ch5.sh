#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapter 5: the noised CLIP for ShapesWorld (4000 steps with hard
# negatives, about 0.9 s a step on 2 uncontended cores, an hour) and the same CLIP trained on clean images
# only (1000 steps, about 16 min); the MANIFEST records each run's wall time as it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch5.sh tutorial-text-clip tutorial-text-clip-clean
