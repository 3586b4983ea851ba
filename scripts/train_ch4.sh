#!/usr/bin/env bash
# Reproduce the shipped checkpoint of chapter 4: the text-conditional ShapesWorld base model (20 %
# empty captions, so it also serves classifier-free guidance; about 45 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch4.sh tutorial-text
