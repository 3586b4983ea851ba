#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapter 9: the emoji judge (an ordinary CLIP, about 10 min on 2
# cores) and the text-conditional base model on the emoji folder (data/emoji, 32x32, a byte-level BPE
# learned from the captions; about 35 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch9.sh tutorial-emoji-clip tutorial-emoji
