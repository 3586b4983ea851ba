#!/usr/bin/env bash
# Reproduce the shipped checkpoint of chapter 5: the noised CLIP for ShapesWorld (about 15 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch5.sh tutorial-text-clip
