"""Export a training run's EMA weights into data/checkpoints/ and record it in MANIFEST.json.

Usage: python scripts/publish_checkpoint.py --run runs/tutorial-ddpm --name tutorial-ddpm --command "..."
           [--companion upsample=tutorial-text-upsample ...]
       python scripts/publish_checkpoint.py --run runs/tutorial-text-mixed --export PATH.safetensors
The record holds the steps, seed, training wall time (from the run's log) and the final losses; a fine-tuned
run (train.init_from) also records the checkpoint it started from and that checkpoint's sha256. --export writes
the same fp16 weights and config to PATH only, outside the store and the MANIFEST: a first stage that a later
config starts from (train.init_from: PATH) but that is not shipped itself.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glide_minimal import pretrained  # noqa: E402
from glide_minimal.train import export_weights  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--run", required=True)
parser.add_argument("--name")
parser.add_argument("--command")
parser.add_argument("--export", metavar="PATH", help="write the weights to PATH (.safetensors) instead of the store")
parser.add_argument("--companion", action="append", default=None, metavar="ROLE=NAME",
                    help="a model that works beside this one (repeatable; default: keep the entry's companions)")
parser.add_argument("--wall-time-s", type=float, help="training wall time (default: summed from the log)")
args = parser.parse_args()
if args.export:
    if not args.export.endswith(".safetensors"):
        parser.error(f"--export takes a .safetensors path, got {args.export!r}")
    out = export_weights(args.run, Path(args.export))
    print(f"exported {out} ({out.stat().st_size / 1e6:.1f} MB)")
    sys.exit(0)
if not (args.name and args.command):
    parser.error("--name and --command are required (or --export PATH)")

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
