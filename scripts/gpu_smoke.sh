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
echo "--- shipped pipelines on the GPU (chapters 1-3): unconditional, CFG and classifier guidance"
$PY - <<'PYEOF'
import time
import torch
import glide_minimal as gm

ev = gm.pretrained.load_evaluator(device="cuda")
ddpm = gm.load_pipeline("tutorial-ddpm", device="cuda")
start = time.perf_counter()
images = ddpm(256, steps=100, seed=0)
torch.cuda.synchronize()
print(f"tutorial-ddpm: 256 images, 100 steps in {time.perf_counter() - start:.2f} s; "
      f"evaluator confidence {ev.quality(images, images)['confidence']:.3f}")
digits = gm.load_pipeline("tutorial-digits", device="cuda")
labels = torch.arange(10).repeat_interleave(20)
for method, scale in [("cfg", 3.0), ("classifier", 3.0)]:
    start = time.perf_counter()
    images = digits(labels, method=method, guidance_scale=scale, steps=50, seed=0)
    torch.cuda.synchronize()
    print(f"tutorial-digits {method} scale {scale}: 200 images in {time.perf_counter() - start:.2f} s, "
          f"evaluator accuracy {ev.accuracy(images, labels):.3f}")
PYEOF
echo "--- chapters 2-3 GPU configs: 100 training steps each"
for cfg in tutorial-digits-gpu tutorial-digits-classifier-gpu; do
  rm -rf "/tmp/gm-$cfg"
  $PY -m glide_minimal.cli train --config "$cfg" --out "/tmp/gm-$cfg" --max-steps 100 --no-progress
done
