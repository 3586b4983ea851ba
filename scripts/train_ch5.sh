#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapter 5: the noised CLIP for ShapesWorld and the same CLIP
# trained on clean images only (about 10 min each on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch5.sh tutorial-text-clip tutorial-text-clip-clean
