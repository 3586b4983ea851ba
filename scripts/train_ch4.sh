#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapter 4, in order: tutorial-text, the text-conditional ShapesWorld
# base model on one object and its template caption (20 % empty captions, so it also serves classifier-free
# guidance; about 55 min on 2 cores), then tutorial-text-varied, fine-tuned from it (train.init_from) on one
# or two objects and captions people write, its vocabulary and context grown word by word (finetune.py). The
# MANIFEST records each run's wall time, and the second's source checkpoint with its sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch4.sh tutorial-text tutorial-text-varied
