#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapters 2-3: the class-conditional digits model (20 % null
# labels, so it also serves classifier-free guidance; about 25 min on 2 cores) and the noised
# classifier (about 3 min).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch2.sh tutorial-digits tutorial-digits-classifier
