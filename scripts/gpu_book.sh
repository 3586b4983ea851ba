#!/usr/bin/env bash
# Execute every chapter on the GPU tier (README "Running on a GPU"), each in a scratch copy, and print per
# chapter: wall time, training time, peak GPU memory and the chapter's claims. GPU-tier models missing from
# the user cache are trained on the spot, MINUTES each (default 4). The book trains 15 such models, so the
# default spends at most an hour training; 0.5 spends 7.5 minutes (plus rendering each model's data and
# executing the chapters: the short run), with weaker models, whose claims may not all hold.
# Usage: scripts/gpu_book.sh [MINUTES] [CHAPTER ...]     e.g. scripts/gpu_book.sh 1 4 6
#        PY=.venv/bin/python scripts/gpu_book.sh         (default python3; this checkout's package is used)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
MINUTES=${1:-4}
shift || true
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here: for the GPU branch on CPU run make test-smoke')"
exec "$PY" scripts/run_book.py --tier gpu --minutes "$MINUTES" "$@"
