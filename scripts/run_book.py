"""Execute the book's chapters top to bottom on one tier, each in a scratch copy, and report on each.

Usage: python scripts/run_book.py [--tier cpu|gpu] [--smoke] [--minutes M] [--cache DIR] [--timeout S]
                                  [--out DIR] [--jobs N] [CHAPTER ...]
CHAPTER: a notebook path or a chapter number (default: every book/*.ipynb). The committed notebooks are never
written: each runs from a copy in --out (default a fresh temporary folder), where the executed copy stays.

For each chapter it prints the wall time, the time spent training models on the spot (GPU tier) and getting
their data and models ready before that (setup: rendering ShapesWorld happens there, outside the training
budget), the peak GPU memory and the chapter's claims as the chapter checked them (glide_minimal.tier:
Tier.claim and Tier.train append to $GLIDE_MINIMAL_REPORT); then a line per model trained: steps, images/s and
why it stopped. Exit status 1 if any chapter raised.

--jobs N executes N chapters at a time, each kernel with one thread (smoke runs are mostly Python overhead,
so two at a time on two cores take about half as long); a model two chapters both need may then be trained
by each, and the MANIFEST keeps one of them.

make test-smoke runs `--tier gpu --smoke --jobs 2` (the GPU branch on CPU, seconds-trained stand-ins, as CI does);
scripts/gpu_book.sh runs `--tier gpu` on a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def chapters(names: list[str]) -> list[Path]:
    book = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return book
    found = []
    for name in names:
        path = Path(name)
        matches = [path] if path.suffix == ".ipynb" else [p for p in book if p.name.startswith(f"{int(name):02d}_")]
        if not matches or not matches[0].exists():
            sys.exit(f"no chapter {name!r}; chapters: {', '.join(p.name for p in book)}")
        found += matches
    return found


def run(path: Path, out: Path, timeout: int) -> dict:
    """Execute a copy of `path` in `out`; {"chapter", "seconds", "error", "report": [rows]}."""
    copy = out / path.name
    shutil.copy(path, copy)
    report = out / f"{path.stem}.report.jsonl"
    report.unlink(missing_ok=True)
    os.environ["GLIDE_MINIMAL_REPORT"] = str(report)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(out)}})
    start, error = time.perf_counter(), None
    try:
        client.execute()
    except CellExecutionError as err:
        error = re.sub(r"\x1b\[[0-9;]*m", "", str(err).strip().splitlines()[-1])[:300]  # no colour codes
    seconds = time.perf_counter() - start
    nbformat.write(nb, copy)
    rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    return {"chapter": path.stem, "seconds": seconds, "error": error, "report": rows}


def summary(r: dict) -> str:
    rows = r["report"]
    trained = sum(row["seconds"] for row in rows if "trained" in row)
    setup = sum(row.get("setup_s", 0.0) for row in rows if "trained" in row)
    peak = max((row.get("peak_gib", 0.0) for row in rows), default=0.0)
    claims = [row for row in rows if "claim" in row]
    held = sum(row["holds"] for row in claims)
    status = f"FAILED: {r['error']}" if r["error"] else "ok"
    return (f"{r['chapter']:<32}{r['seconds']:>8.0f}{trained:>10.0f}{setup:>9.0f}{peak:>10.2f}"
            f"{f'{held}/{len(claims)}':>9}  {status}")


def training_line(chapter: str, row: dict) -> str:
    """One model a chapter trained on the spot: steps, images/s, why it stopped, and the data's setup time."""
    rate = row["steps"] * row.get("batch", 0) / row["seconds"] if row["seconds"] > 0 else float("nan")
    return (f"  {chapter[:2]} trained {row['trained']}: {row['steps']} steps in {row['seconds']:.0f} s "
            f"({rate:.0f} images/s; stopped: {row['stopped']}), data and model ready in "
            f"{row.get('setup_s', float('nan')):.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*")
    parser.add_argument("--tier", choices=["cpu", "gpu"], default=None, help="default: gpu when CUDA is available")
    parser.add_argument("--smoke", action="store_true", help="the GPU branch on CPU with seconds-trained stand-ins")
    parser.add_argument("--minutes", type=float, help="GLIDE_MINIMAL_GPU_MINUTES: training budget per missing model")
    parser.add_argument("--cache", help="GLIDE_MINIMAL_CACHE (default: yours; a smoke run uses a fresh one)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--out", help="where the executed copies go (default: a new temporary folder)")
    parser.add_argument("--jobs", type=int, default=1, help="chapters executed at a time (default 1)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.minutes is not None and not args.minutes > 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    out = Path(args.out or tempfile.mkdtemp(prefix="glide-book-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke and args.tier == "cpu":
        parser.error("--smoke runs the GPU tier's branch: drop --tier cpu")
    env = {"GLIDE_MINIMAL_TIER": "gpu" if args.smoke else args.tier or "",
           "GLIDE_MINIMAL_SMOKE": "1" if args.smoke else "",
           "GLIDE_MINIMAL_GPU_MINUTES": "" if args.minutes is None else str(args.minutes),
           "GLIDE_MINIMAL_CACHE": args.cache or (str(out / "cache") if args.smoke else ""),
           # the kernel is this interpreter's (a venv's python3 kernel), with this checkout's package
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep)}
    for key, value in env.items():
        if value:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    print(f"executing in {out} with " + " ".join(f"{k}={v}" for k, v in env.items() if v and k.startswith("GLIDE")))
    print(f"{'chapter':<32}{'wall s':>8}{'train s':>10}{'setup s':>9}{'peak GiB':>10}{'claims':>9}  status",
          flush=True)
    if args.jobs > 1:  # one thread per kernel: the chapters' own torch.set_num_threads is capped by this
        os.environ["GLIDE_MINIMAL_THREADS"] = "1"
    results = []
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run, path, out, args.timeout) for path in chapters(args.chapters)]
        for future in futures:
            results.append(future.result())
            print(summary(results[-1]), flush=True)
    for r in results:
        for row in r["report"]:
            if "trained" in row:
                print(training_line(r["chapter"], row))
    for r in results:
        for row in r["report"]:
            if "claim" in row:
                print(f"  {r['chapter'][:2]} {'holds' if row['holds'] else 'DOES NOT HOLD'}: {row['claim']}")
    total = sum(r["seconds"] for r in results)
    failed = [r["chapter"] for r in results if r["error"]]
    print(f"{len(results) - len(failed)}/{len(results)} chapters ran top to bottom in {total:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
