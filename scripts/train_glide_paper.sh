#!/usr/bin/env bash
# Train GLIDE's 3.5 B-parameter base model (glide-paper-base: 64 px, 512 channels, text 24 x 2048) on
# several GPU nodes with FSDP. Documented for readers, not run by CI (it needs a GPU cluster).
#
# Run the same command on every node; torchrun's c10d rendezvous on node 0 assigns the ranks:
#   NNODES=8 MASTER_ADDR=node0.example scripts/train_glide_paper.sh              # on each of the 8 nodes
#   NNODES=8 MASTER_ADDR=node0.example scripts/train_glide_paper.sh --max-steps 1000   # extra args go to `train`
# What it runs on every node (8 GPUs each, 64 processes in all):
#   torchrun --nnodes 8 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint node0.example:29500 \
#     --rdzv-id glide-paper-base --max-restarts 3 \
#     -m glide_minimal.cli train --config glide-paper-base --out runs/glide-paper-base --resume --no-progress \
#     --set train.parallel=fsdp --set train.activation_checkpointing=true --set train.grad_accum_steps=1 \
#     --set train.precision=bf16
#
# Needs on every node: this checkout and its environment, the same torch with CUDA and NCCL, OUT on a
# filesystem all nodes share (rank 0 writes the checkpoint; every rank reads its metadata to resume), and
# GLIDE's BPE vocabulary (encoder.json, vocab.bpe, shipped with the released checkpoints) in data/vocab/ or
# in the folder GLIDE_MINIMAL_VOCAB names: the config's captions use the released models' tokenizer.
# Checked end to end on 2 CPU processes (gloo) with the model shrunk by extra --set arguments and
# --set model.tokenizer=shapesworld --device cpu.
# Memory per GPU, before launching: glide-minimal info --config glide-paper-base --gpus 64
#   FSDP shards weights, gradients, AdamW moments and EMA 64 ways (66 GiB in all in fp32: about 1 GiB per
#   GPU), checkpointing keeps the activations of 32 images per GPU near 8 GiB. With fewer GPUs keep the
#   global batch at the paper's 2048 by raising ACCUM: 2048 / (GPUs x ACCUM) images per GPU per forward
#   (16 GPUs: ACCUM=2 gives 64).
# Restarts: --resume continues from OUT's last checkpoint (a fresh run when there is none), bit-exactly
#   (the data order and dropout masks are seeded by the step); torchrun's --max-restarts restarts every
#   worker after a failure, and the restarted workers resume the same way.
# Data: the config trains on ShapesWorld at 64 px (the paper's image-text data was never released); point
#   data.* at your own data loader to train on real pairs.
set -euo pipefail
cd "$(dirname "$0")/.."
NNODES=${NNODES:?set NNODES to the number of nodes}
MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to node 0 (the rendezvous host)}
MASTER_PORT=${MASTER_PORT:-29500}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
ACCUM=${ACCUM:-1}
OUT=${OUT:-runs/glide-paper-base}
PY=${PY:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}  # per process; the data pipeline is light

exec "$PY" -m torch.distributed.run \
  --nnodes "$NNODES" --nproc-per-node "$GPUS_PER_NODE" \
  --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id glide-paper-base \
  --max-restarts 3 \
  -m glide_minimal.cli train --config glide-paper-base --out "$OUT" --resume --no-progress \
  --set train.parallel=fsdp --set train.activation_checkpointing=true --set "train.grad_accum_steps=$ACCUM" \
  --set train.precision=bf16 "$@"
