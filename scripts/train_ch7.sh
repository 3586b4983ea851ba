#!/usr/bin/env bash
# Reproduce the shipped checkpoints of chapter 7: the inpainting base model and the inpainting upsampler,
# fine-tuned (train.init_from) from the shipped tutorial-text and tutorial-text-upsample with the new input
# channels starting at zero. The base model takes two stages: tutorial-text-inpaint-stage1 (20 % empty
# captions, 4000 steps, 50 min on 2 cores), exported into runs/ but not shipped, then tutorial-text-inpaint,
# which goes on from it with half the captions empty (2000 steps); the upsampler one (1000 steps, 6 min).
# The MANIFEST records each shipped run's wall time. Run scripts/train_ch4.sh and scripts/train_ch6.sh first:
# the MANIFEST record names the checkpoint each one started from (and its sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for source in tutorial-text tutorial-text-upsample; do
  $PY -c "import sys; from glide_minimal import pretrained; sys.exit(0 if '$source' in pretrained.available() else 1)" || {
    echo "error: chapter 7 fine-tunes the shipped $source checkpoint, which is missing; run scripts/train_ch4.sh and scripts/train_ch6.sh first" >&2
    exit 1
  }
done
scripts/train_checkpoints.sh scripts/train_ch7.sh stage:tutorial-text-inpaint-stage1 tutorial-text-inpaint \
  tutorial-text-upsample-inpaint
