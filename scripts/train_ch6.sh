#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapter 6: the text-conditional upsampler 16 -> 64 px with
# noise-augmented low-res inputs, and the same upsampler without augmentation (the chapter's ablation);
# about 20 min each on 2 cores (32 px crops). Independent of the base model: it trains on true renders.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch6.sh tutorial-text-upsample tutorial-text-upsample-noaug
