#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapter 5: the noised CLIP for ShapesWorld in two stages,
# tutorial-text-clip-stage1 (4000 steps with hard negatives, about 90 min on 2 cores), exported into runs/
# but not shipped, then tutorial-text-clip, which goes on from it at a lower learning rate (1000 steps);
# and the same CLIP trained on clean images only (1000 steps, about 16 min). The MANIFEST records each
# shipped run's wall time, and for the second stage the file it started from with its sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch5.sh stage:tutorial-text-clip-stage1 tutorial-text-clip \
  tutorial-text-clip-clean
