"""Export a training run's EMA weights into data/checkpoints/ and record it in MANIFEST.json.

Usage: python scripts/publish_checkpoint.py --run runs/tutorial-ddpm --name tutorial-ddpm --command "..."
           [--companion upsample=tutorial-text-upsample ...]
The record holds the steps, seed, training wall time (from the run's log) and the final losses; a fine-tuned
run (train.init_from) also records the checkpoint it started from and that checkpoint's sha256.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glide_minimal import pretrained  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--run", required=True)
parser.add_argument("--name", required=True)
parser.add_argument("--command", required=True)
parser.add_argument("--companion", action="append", default=None, metavar="ROLE=NAME",
                    help="a model that works beside this one (repeatable; default: keep the entry's companions)")
parser.add_argument("--wall-time-s", type=float, help="training wall time (default: summed from the log)")
args = parser.parse_args()

companions = None
if args.companion is not None:
    pairs = [c.split("=", 1) for c in args.companion]
    if any(len(p) != 2 or not all(p) for p in pairs):
        parser.error(f"--companion takes ROLE=NAME, e.g. upsample=tutorial-text-upsample; got {args.companion}")
    companions = dict(pairs)
path = pretrained.publish_run(Path(args.run), args.name, args.command, companions=companions,
                              wall_time_s=args.wall_time_s, threads=2)
steps = pretrained.entry(args.name, path.parent)["steps"]
print(f"published {path} ({path.stat().st_size / 1e6:.1f} MB), step {steps}")
