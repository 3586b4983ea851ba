#!/usr/bin/env bash
# GPU smoke test and benchmarks, for when a GPU is lent (see README "Running on a GPU").
# Runs the chapter-1 configs on the GPU: training throughput (bf16 autocast), the sampler's overhead
# over bare forwards, and the trainer under torchrun (DDP/NCCL, one process). Prints what it measured.
# Usage: scripts/gpu_smoke.sh [python]     (defaults to python3; the package is used from this checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$PY - <<'PYEOF'
import torch
print(f"torch {torch.__version__}, cuda {torch.version.cuda}, device {torch.cuda.get_device_name(0)}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
PYEOF
for cfg in tutorial-ddpm tutorial-ddpm-gpu; do
  $PY -m glide_minimal.cli info --config "$cfg" | head -2
  $PY -m glide_minimal.cli bench train --config "$cfg" --steps 30 --device cuda
  $PY -m glide_minimal.cli bench sampler --config "$cfg" --steps 50 --batch 64 --device cuda
done
echo "--- trainer under torchrun (DDP, NCCL, 1 process), 200 steps of tutorial-ddpm-gpu, then resume to 250"
rm -rf /tmp/gm-ddp
$PY -m torch.distributed.run --standalone --nproc_per_node 1 -m glide_minimal.cli train \
  --config tutorial-ddpm-gpu --out /tmp/gm-ddp --max-steps 200 --no-progress
$PY -m torch.distributed.run --standalone --nproc_per_node 1 -m glide_minimal.cli train \
  --config tutorial-ddpm-gpu --out /tmp/gm-ddp --max-steps 250 --resume --no-progress
tail -n 2 /tmp/gm-ddp/log.jsonl
