"""Train an independent evaluator on real data and publish it into data/checkpoints/.

Usage: python scripts/train_evaluator.py --world digits [--steps 1500] [--seed 0]
       python scripts/train_evaluator.py --world shapes [--image-size 16] [--steps 2000]
       python scripts/train_evaluator.py --world scenes [--steps 3000]
digits: a CNN on the real digit train split (named digits-evaluator); shapes: a CNN reading the shape,
color, size and position of one-object ShapesWorld renders (named shapes-evaluator-<size>); scenes: a CNN
reading the objects of one- and two-object scenes slot by slot (named scenes-evaluator-<size>).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glide_minimal import pretrained  # noqa: E402
from glide_minimal.evaluators import SHIPPED_DTYPE, train_digit_evaluator, train_scene_evaluator, train_shapes_evaluator  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--world", choices=["digits", "shapes", "scenes"], default="digits")
parser.add_argument("--image-size", type=int, default=16)
parser.add_argument("--steps", type=int, default=1500)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
start = time.perf_counter()
command = f"python scripts/train_evaluator.py --world {args.world} --steps {args.steps} --seed {args.seed}"
if args.world == "digits":
    model, acc = train_digit_evaluator(steps=args.steps, seed=args.seed)
    name, config, metrics = "digits-evaluator", {"kind": "digit-evaluator", "image_size": model.image_size}, {
        "test_accuracy": round(acc, 4), "test_images": 297}
elif args.world == "scenes":
    model, acc = train_scene_evaluator(args.image_size, steps=args.steps, seed=args.seed)
    name, config = f"scenes-evaluator-{args.image_size}", {"kind": "scene-evaluator", "image_size": model.image_size}
    metrics = {f"{k}_accuracy": round(v, 4) for k, v in acc.items()}
    command += f" --image-size {args.image_size}"
else:
    model, acc = train_shapes_evaluator(args.image_size, steps=args.steps, seed=args.seed)
    name, config = f"shapes-evaluator-{args.image_size}", {"kind": "shapes-evaluator", "image_size": model.image_size}
    metrics = {f"augmented_{k}_accuracy" if k != "clean_all" else "clean_all_attributes_accuracy": round(v, 4)
               for k, v in acc.items()}
    command += f" --image-size {args.image_size}"
wall = time.perf_counter() - start
pretrained.publish(name, model.state_dict(), config, dtype=SHIPPED_DTYPE,
                   record={"command": command, "steps": args.steps, "seed": args.seed, "wall_time_s": round(wall, 1),
                           "metrics": metrics})
print(f"{name}: {metrics} after {args.steps} steps ({wall:.0f} s)")
