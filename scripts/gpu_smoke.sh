#!/usr/bin/env bash
# GPU smoke test and benchmarks, for when a GPU is lent (see README "Running on a GPU"). Prints a table.
# Parts: the chapter-1 configs (training throughput in bf16, sampler overhead); the released-size GLIDE
# base and upsampler (random weights) forward + backward in bf16; their forwards in fp32 / bf16 x
# contiguous / channels_last at batch 4 and 16, and the top operators of the base forward in the two
# extremes (why a setting loses); the released-size cascade with CFG at batch 16: the official 100 + 27 steps
# in fp32 and our fast settings (precision and layout measured fastest), side by side; the trainer under
# torchrun on one GPU with DDP and with FSDP (+ checkpointing and accumulation), each resumed; the shipped
# pipelines (chapters 1-7); 100 training steps of the chapter 2-3 GPU configs.
# Every part runs on its own: a failure is recorded (its log's last lines are shown) and the next part
# runs. The summary table at the end lists each part's status, seconds and one-line result; the exit
# status is 1 if any part failed. Logs: $LOG_DIR (default /tmp/gm-smoke).
# Usage: scripts/gpu_smoke.sh [python]     (defaults to python3; the package is used from this checkout)
#        SMOKE_COMPILE=1 scripts/gpu_smoke.sh    also times the fast cascade with torch.compile
set -uo pipefail  # no -e: one failing part must not stop the others
cd "$(dirname "$0")/.."
PY=${1:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOG_DIR=${LOG_DIR:-/tmp/gm-smoke}
rm -rf "$LOG_DIR" && mkdir -p "$LOG_DIR"
NAMES=() STATUS=() SECS=() RESULTS=()

part() {  # part NAME COMMAND...: run it, keep its log, record status, seconds and result line
  local name=$1 log start rc result
  shift
  log="$LOG_DIR/$(printf '%02d' "${#NAMES[@]}")_$(echo "$name" | tr -c 'A-Za-z0-9\n' '_').log"
  start=$(date +%s)
  echo "=== $name"
  "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  result=$(grep -h '^RESULT:' "$log" | tail -n 1 | cut -c9-)
  [ -n "$result" ] || result=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1)
  if [ "$rc" -ne 0 ]; then
    echo "--- $name FAILED (exit $rc); last lines of $log:"
    tail -n 5 "$log"
  fi
  NAMES+=("$name")
  STATUS+=("$([ "$rc" -eq 0 ] && echo ok || echo "FAILED($rc)")")
  SECS+=("$(( $(date +%s) - start ))")
  RESULTS+=("${result:0:110}")
  return 0
}

train_and_resume() {  # train_and_resume OUT STEPS RESUME_STEPS TORCHRUN_AND_TRAIN_ARGS...: train, resume, last log row
  local out=$1 steps=$2 more=$3
  shift 3
  rm -rf "$out"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m glide_minimal.cli train --out "$out" \
    --max-steps "$steps" --no-progress "$@" &&
  "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m glide_minimal.cli train --out "$out" \
    --max-steps "$more" --resume --no-progress "$@" &&
  tail -n 1 "$out/log.jsonl"
}

part "environment" "$PY" scripts/gpu_smoke_parts.py env
for cfg in tutorial-ddpm tutorial-ddpm-gpu; do
  part "$cfg: info" "$PY" -m glide_minimal.cli info --config "$cfg"
  part "$cfg: bench train (bf16)" "$PY" -m glide_minimal.cli bench train --config "$cfg" --steps 30 --device cuda
  part "$cfg: bench sampler" "$PY" -m glide_minimal.cli bench sampler --config "$cfg" --steps 50 --batch 64 --device cuda
done
part "glide-paper-base: memory on 64 GPUs" "$PY" -m glide_minimal.cli info --config glide-paper-base --gpus 64
part "released base: bf16 fwd+bwd, batch 4" "$PY" scripts/gpu_smoke_parts.py fwd-bwd glide-filtered-base 4
part "released upsampler: bf16 fwd+bwd, batch 4" "$PY" scripts/gpu_smoke_parts.py fwd-bwd glide-filtered-upsample 4
part "released forwards: fp32/bf16 x layout, batch 4" "$PY" scripts/gpu_smoke_parts.py forward-grid 4
part "released forwards: fp32/bf16 x layout, batch 16" "$PY" scripts/gpu_smoke_parts.py forward-grid 16
part "released base forward: top operators, batch 4" "$PY" scripts/gpu_smoke_parts.py forward-profile 4
part "released cascade 100+27, CFG, batch 16" "$PY" scripts/gpu_smoke_parts.py cascade 16
if [ -n "${SMOKE_COMPILE:-}" ]; then
  part "released cascade, torch.compile" "$PY" scripts/gpu_smoke_parts.py cascade 16 --compile
fi
part "DDP, 1 GPU (NCCL): 200 steps + resume to 250" \
  train_and_resume /tmp/gm-ddp 200 250 --config tutorial-ddpm-gpu
part "FSDP, 1 GPU (NCCL), ckpt + accum 2: 100 + resume to 120" \
  train_and_resume /tmp/gm-fsdp 100 120 --config tutorial-ddpm-gpu --set train.parallel=fsdp \
  --set train.activation_checkpointing=true --set train.grad_accum_steps=2
part "shipped pipelines (chapters 1-3)" "$PY" scripts/gpu_smoke_parts.py pipelines
part "shipped pipelines (chapters 4-7)" "$PY" scripts/gpu_smoke_parts.py text-pipelines
for cfg in tutorial-digits-gpu tutorial-digits-classifier-gpu; do
  rm -rf "/tmp/gm-$cfg"
  part "$cfg: 100 training steps" "$PY" -m glide_minimal.cli train --config "$cfg" --out "/tmp/gm-$cfg" \
    --max-steps 100 --no-progress
done

echo
echo "=== summary (logs in $LOG_DIR)"
printf '%-58s %-10s %6s  %s\n' "part" "status" "s" "result"
failed=0
for i in "${!NAMES[@]}"; do
  printf '%-58s %-10s %6s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${RESULTS[$i]}"
  [ "${STATUS[$i]}" = ok ] || failed=1
done
exit "$failed"
