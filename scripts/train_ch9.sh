#!/usr/bin/env bash
# Reproduce the shipped checkpoint of chapter 9: the text-conditional base model on the emoji folder
# (data/emoji, 32x32, a byte-level BPE learned from the captions; about an hour on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch9.sh tutorial-emoji
