"""Train the independent digit evaluator on real digits and publish it into data/checkpoints/.

Usage: python scripts/train_evaluator.py [--steps 1500] [--seed 0]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glide_minimal import pretrained  # noqa: E402
from glide_minimal.metrics import train_digit_evaluator  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=1500)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
start = time.perf_counter()
model, acc = train_digit_evaluator(steps=args.steps, seed=args.seed)
wall = time.perf_counter() - start
config = {"kind": "digit-evaluator", "image_size": model.image_size}
pretrained.publish(
    "digits-evaluator", model.state_dict(), config, dtype=torch.float32,
    record={"command": f"python scripts/train_evaluator.py --steps {args.steps} --seed {args.seed}",
            "steps": args.steps, "seed": args.seed, "wall_time_s": round(wall, 1),
            "metrics": {"test_accuracy": round(acc, 4), "test_images": 297}},
)
print(f"digit evaluator: test accuracy {acc:.4f} after {args.steps} steps ({wall:.0f} s)")
