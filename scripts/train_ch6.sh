#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapter 6: the text-conditional upsampler 16 -> 64 px with
# noise-augmented low-res inputs (k in 0..100), and the same upsampler at the chapter's two other training
# levels, without augmentation and with light augmentation (k in 0..30); about 25-55 min each on 2 cores
# (32 px crops; the MANIFEST records each run's wall time). Independent of the base model: they train on
# true renders.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/train_checkpoints.sh scripts/train_ch6.sh tutorial-text-upsample tutorial-text-upsample-noaug \
  tutorial-text-upsample-lightaug
