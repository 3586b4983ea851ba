#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapter 4, in order: tutorial-text, the text-conditional ShapesWorld
# base model on one object and its template caption (20 % empty captions, so it also serves classifier-free
# guidance; about 55 min on 2 cores), then tutorial-text-varied in three stages: tutorial-text-mixed, fine-tuned
# from tutorial-text (train.init_from) on one or two objects and captions people write, its vocabulary and
# context grown word by word (finetune.py; 4000 steps, about 80 min); tutorial-text-varied-stage2, which goes
# on from it with four scenes in five holding two objects (2500 steps, about 50 min); both exported into runs/
# but not shipped; then tutorial-text-varied, the second stage with self-attention added at 16 px (1000 steps,
# about 26 min). The MANIFEST records each shipped run's wall time, and the source checkpoint with its sha256.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch4.sh tutorial-text stage:tutorial-text-mixed stage:tutorial-text-varied-stage2 tutorial-text-varied
