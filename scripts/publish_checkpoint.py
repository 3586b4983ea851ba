"""Export a training run's EMA weights into data/checkpoints/ and record it in MANIFEST.json.

Usage: python scripts/publish_checkpoint.py --run runs/tutorial-ddpm --name tutorial-ddpm --command "..."
           [--companion upsample=tutorial-text-upsample ...]
The record holds the steps, seed, training wall time (from the run's log) and the final losses; a fine-tuned
run (train.init_from) also records the checkpoint it started from and that checkpoint's sha256.
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from glide_minimal import pretrained  # noqa: E402
from glide_minimal.checkpoint import load_tensors  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--run", required=True)
parser.add_argument("--name", required=True)
parser.add_argument("--command", required=True)
parser.add_argument("--companion", action="append", default=None, metavar="ROLE=NAME",
                    help="a model that works beside this one (repeatable; default: keep the entry's companions)")
parser.add_argument("--wall-time-s", type=float, help="training wall time (default: summed from the log)")
args = parser.parse_args()

run = Path(args.run)
tensors, meta = load_tensors(run / "checkpoint.safetensors")
ema = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines() if r.strip()]
cfg = meta["config"]
last = rows[-1]
wall = args.wall_time_s or meta.get("wall_time_s") or last["step"] * cfg["train"]["batch_size"] / last["images_per_s"]
record = {"command": args.command, "train_config": cfg["name"], "steps": meta["step"], "seed": cfg["train"]["seed"],
          "wall_time_s": round(wall, 1), "threads": 2,
          "metrics": {k: last[k] for k in ("loss", "mse", "vb", "accuracy") if k in last}}
source = cfg["train"].get("init_from")
if source:  # a fine-tuned model (chapter 7): record what it started from, as it was when published
    entries = pretrained.manifest()
    record["init_from"] = source
    record["init_from_sha256"] = entries[source]["sha256"] if source in entries else pretrained.sha256_file(source)
companions = None
if args.companion is not None:
    pairs = [c.split("=", 1) for c in args.companion]
    if any(len(p) != 2 or not all(p) for p in pairs):
        parser.error(f"--companion takes ROLE=NAME, e.g. upsample=tutorial-text-upsample; got {args.companion}")
    companions = dict(pairs)
path = pretrained.publish(args.name, ema, cfg, record=record, dtype=torch.float16, companions=companions)
print(f"published {path} ({path.stat().st_size / 1e6:.1f} MB), step {meta['step']}")
