#!/usr/bin/env python3
"""The wheel check (issue 18; `make wheel-check`, run by .ci/run): does a plain, non-editable install work?

1. build    `python -m build` (the sdist, then the wheel from that sdist, as a release would), with `build`
            in a throwaway venv, into a temporary folder; the repository gets no build/ or dist/.
2. inspect  the wheel carries glide_minimal/_data/checkpoints (MANIFEST.json and every file it names, with
            the sha256 it records) and the configs, and no notebooks, tests or data outside the package;
            its size is printed (README.md, "Install", quotes it).
3. install  a fresh venv; torch first (requirements-ci.txt's pin: README's "install torch first"); then
            `pip install --dry-run --report` of the repository and of the wheel must not install torch (pip
            keeps the torch that satisfies the range); then the wheel, without -e, constrained to
            requirements-ci.txt; `pip check`.
4. run      from a temporary folder outside the repository, with $GLIDE_MINIMAL_CHECKPOINTS unset and an empty
            $GLIDE_MINIMAL_CACHE: glide_minimal imports from the fresh venv, every shipped checkpoint
            resolves to the installed package data and passes its sha256 check, the CLI samples, and
            README.md's quick-start python block runs (statement by statement, each one's wall time printed);
            then an unknown name must list where it looked, and a damaged installed file must be refused.

Standard library only. Usage: python scripts/check_wheel.py [--wheel PATH] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = "glide_minimal/_data/checkpoints/"


def quick_start(readme: str) -> str:
    """The first ```python block under README.md's "## Quick start" heading: the snippet a new user runs."""
    section = re.search(r"^## Quick start\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if not section:
        raise SystemExit("README.md has no '## Quick start' section")
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.M | re.S)
    if not block:
        raise SystemExit("README.md's Quick start has no ```python block")
    return block.group(1)


def torch_pin(requirements: str) -> str:
    """requirements-ci.txt's `torch==X` line (the torch CI installs first)."""
    pins = re.findall(r"^torch==\S+", requirements, re.M)
    if len(pins) != 1:
        raise SystemExit(f"requirements-ci.txt must pin torch exactly once (torch==X); found {pins}")
    return pins[0]


def inspect_wheel(wheel: Path, manifest: dict) -> list[str]:
    """Problems with the wheel's contents (empty: fine): the shipped checkpoints, nothing that should not ship."""
    import hashlib

    problems = []
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        if DATA + "MANIFEST.json" not in names:
            return [f"{wheel.name} has no {DATA}MANIFEST.json"]
        if json.loads(zf.read(DATA + "MANIFEST.json")) != manifest:
            problems.append(f"{DATA}MANIFEST.json differs from data/checkpoints/MANIFEST.json")
        for name, entry in manifest["checkpoints"].items():
            for key, sha in (("file", "sha256"), ("config", "config_sha256")):
                member = DATA + entry[key]
                if member not in names:
                    problems.append(f"{member} ({name}) is missing")
                elif hashlib.sha256(zf.read(member)).hexdigest() != entry[sha]:
                    problems.append(f"{member} ({name}) does not have the sha256 MANIFEST.json records")
        if not any(n.startswith("glide_minimal/configs/") and n.endswith(".yaml") for n in names):
            problems.append("no glide_minimal/configs/*.yaml")
        for n in sorted(names):
            top = n.split("/", 1)[0]
            if n.endswith(".ipynb") or top in ("tests", "book", "data", "scripts") or "/tests/" in n:
                problems.append(f"{n} should not be in the wheel")
            elif not (top == "glide_minimal" or top.endswith(".dist-info")):
                problems.append(f"{n} is outside the package")
    return problems


def run(cmd: list[str], log: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run cmd; on failure print its output (or the tail of its log) and stop."""
    if log is None:
        done = subprocess.run(cmd, text=True, capture_output=True, **kwargs)
        output = done.stdout + done.stderr
    else:
        with open(log, "w") as f:
            done = subprocess.run(cmd, text=True, stdout=f, stderr=subprocess.STDOUT, **kwargs)
        output = log.read_text()
    if done.returncode:
        print(output[-6000:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}")
    done.output = output
    return done


def would_install(python: Path, target: str, work: Path, tag: str) -> list[str]:
    """The distributions `pip install target` would install in that venv (a dry run with a JSON report)."""
    report = work / f"dry-run-{tag}.json"
    run([str(python), "-m", "pip", "install", "--quiet", "--dry-run", "--report", str(report), target,
         "-c", str(ROOT / "requirements-ci.txt")], log=work / f"dry-run-{tag}.log")
    return sorted(item["metadata"]["name"] for item in json.loads(report.read_text())["install"])


CHECK_INSTALLED = r"""
import json, sys
from pathlib import Path
import glide_minimal as gm
from glide_minimal import pretrained

venv, expected = Path(sys.prefix).resolve(), json.loads(sys.argv[1])
here = Path(gm.__file__).resolve()
assert here.is_relative_to(venv), f"glide_minimal imported from {here}, not from the fresh venv {venv}"
print(f"  glide_minimal {here.parent}")
for i, loc in enumerate(pretrained.locations(), 1):
    print(f"  lookup {i}. {loc.label}: {loc.path or loc.why}")
assert pretrained.available() == expected, (pretrained.available(), expected)
for name in expected:
    loc, _ = pretrained.locate(name)
    assert loc.installed and loc.path == pretrained.PACKAGE_DATA, (name, loc)
    pretrained.verified_path(name)
print(f"  {len(expected)} checkpoints resolve to the installed package data and pass their sha256 check")
"""

BAD_INPUT = r"""
from glide_minimal import pretrained
from glide_minimal.checkpoint import CheckpointError
try:
    pretrained.entry("no-such-model")
    raise SystemExit("an unknown name loaded")
except KeyError as err:
    assert "looked in: 1. $GLIDE_MINIMAL_CHECKPOINTS" in str(err) and str(pretrained.PACKAGE_DATA) in str(err), err
path = pretrained.verified_path("tutorial-ddpm")
payload = bytearray(path.read_bytes())
payload[len(payload) // 2] ^= 1
path.write_bytes(bytes(payload))  # a damaged install
try:
    pretrained.load_weights("tutorial-ddpm")
    raise SystemExit("a damaged installed checkpoint loaded")
except CheckpointError as err:
    assert str(path) in str(err) and "reinstall it" in str(err), err
    print(f"  a damaged installed file is refused: {str(err)[:160]}...")
"""

RUN_SNIPPET = r"""
import ast, sys, time
source = open(sys.argv[1]).read()
namespace = {"__name__": "__main__"}
start = time.perf_counter()
for node in ast.parse(source).body:
    t0 = time.perf_counter()
    exec(compile(ast.Module(body=[node], type_ignores=[]), "README quick start", "exec"), namespace)
    line = ast.get_source_segment(source, node).splitlines()[0]
    print(f"  {time.perf_counter() - t0:6.1f} s  {line[:100]}", flush=True)
print(f"  quick start: {time.perf_counter() - start:.1f} s", flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="check this wheel instead of building one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = parser.parse_args()
    t_start = time.time()
    times: dict[str, float] = {}

    def stage(name: str) -> None:
        times[name] = time.time()
        print(f"--- {name}", flush=True)

    manifest = json.loads((ROOT / "data" / "checkpoints" / "MANIFEST.json").read_text())
    snippet = quick_start((ROOT / "README.md").read_text())
    torch_req = torch_pin((ROOT / "requirements-ci.txt").read_text())
    work = Path(tempfile.mkdtemp(prefix="glide-wheel-check."))
    try:
        bindir = "Scripts" if os.name == "nt" else "bin"
        if args.wheel:
            wheel = args.wheel.resolve()
        else:
            stage("build (python -m build: sdist, then the wheel from it)")
            run([sys.executable, "-m", "venv", str(work / "tools")])
            tools = work / "tools" / bindir / "python"
            run([str(tools), "-m", "pip", "install", "--quiet", "build"], log=work / "tools.log")
            run([str(tools), "-m", "build", "--outdir", str(work / "dist"), str(ROOT)], log=work / "build.log")
            wheel = next((work / "dist").glob("*.whl"))
            sdist = next((work / "dist").glob("*.tar.gz"))
            print(f"  {sdist.name}: {sdist.stat().st_size / 1e6:.1f} MB")

        stage("inspect the wheel")
        problems = inspect_wheel(wheel, manifest)
        if problems:
            raise SystemExit("the wheel is wrong:\n  " + "\n  ".join(problems))
        with zipfile.ZipFile(wheel) as zf:
            unpacked = sum(i.file_size for i in zf.infolist())
            data = sum(i.file_size for i in zf.infolist() if i.filename.startswith(DATA))
        size = wheel.stat().st_size
        print(f"  {wheel.name}: {size / 1e6:.1f} MB ({size / 2**20:.1f} MiB; unpacked {unpacked / 1e6:.1f} MB, "
              f"of which checkpoints {data / 1e6:.1f} MB, {len(manifest['checkpoints'])} entries)")

        stage(f"install into a fresh venv: {torch_req} first, then the wheel (no -e)")
        run([sys.executable, "-m", "venv", str(work / "venv")])
        python = work / "venv" / bindir / "python"
        run([str(python), "-m", "pip", "install", "--quiet", torch_req], log=work / "torch.log")
        for tag, target in (("source", str(ROOT)), ("wheel", str(wheel))):
            planned = would_install(python, target, work, tag)
            print(f"  pip install --dry-run {'.' if tag == 'source' else wheel.name} "
                  f"would install: {', '.join(planned)}")
            if "torch" in planned:
                raise SystemExit(f"pip would install a second torch next to {torch_req} ({tag})")
        run([str(python), "-m", "pip", "install", "--quiet", str(wheel), "-c", str(ROOT / "requirements-ci.txt")],
            log=work / "install.log")
        run([str(python), "-m", "pip", "check"])
        listed = run([str(python), "-m", "pip", "list", "--format", "json"]).stdout
        torches = [d["version"] for d in json.loads(listed) if d["name"] == "torch"]
        print(f"  installed; torch {', '.join(torches)}")

        stage("run from outside the repository")
        outside = work / "outside"
        outside.mkdir()
        # One thread: results do not depend on it, and two-thread OpenMP runs crawl when the CPUs are shared.
        env = {k: v for k, v in os.environ.items() if k not in ("GLIDE_MINIMAL_CHECKPOINTS", "PYTHONPATH")}
        env.update(GLIDE_MINIMAL_CACHE=str(work / "empty-cache"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1", MPLBACKEND="Agg")
        opts = dict(cwd=outside, env=env)
        print(run([str(python), "-c", CHECK_INSTALLED, json.dumps(sorted(manifest["checkpoints"]))], **opts).stdout,
              end="")
        cli = work / "venv" / bindir / "glide-minimal"
        out = run([str(cli), "sample", "--pipeline", "tutorial-ddpm", "--num-images", "4", "--steps", "10",
                   "--out", "grid.png", "--device", "cpu", "--no-progress"], **opts)
        print(f"  glide-minimal sample: {out.stdout.strip()}")
        (outside / "quick_start.py").write_text(snippet)
        stage("README quick start (from outside the repository)")
        done = subprocess.run([str(python), "-c", RUN_SNIPPET, "quick_start.py"], **opts)
        if done.returncode:
            raise SystemExit(f"README.md's quick start failed in the fresh venv ({done.returncode})")
        stage("bad input (in the throwaway venv): an unknown name, a damaged installed file")
        print(run([str(python), "-c", BAD_INPUT], **opts).stdout, end="")
        times["end"] = time.time()
        names = list(times)
        print("--- wall time: " + ", ".join(f"{n.split(' (')[0].split(':')[0]} {times[b] - times[n]:.0f} s"
                                            for n, b in zip(names, names[1:])))
        print(f"--- wheel check passed in {time.time() - t_start:.0f} s; wheel {size / 1e6:.1f} MB")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
