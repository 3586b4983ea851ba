"""Build hook: a wheel carries the shipped checkpoints (issue 18). The metadata lives in pyproject.toml.

data/checkpoints/ stays the home of the artifacts in the repository. When setuptools builds the package
(a wheel: `python -m build`, `pip install .`, `pip install git+URL`), build_py copies MANIFEST.json and the
files each of its entries names (the safetensors, its config JSON and a learned tokenizer) into
glide_minimal/_data/checkpoints, after checking every file's sha256 against the MANIFEST: a wheel never
carries a file the MANIFEST does not describe. An editable install copies nothing: it reads the checkout's
data/ directly. The sdist carries data/checkpoints (MANIFEST.in), so a wheel built from the sdist has them too.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SOURCE = Path("data") / "checkpoints"
TARGET = Path("glide_minimal") / "_data" / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_files(source: Path) -> list[str]:
    """MANIFEST.json and every file its entries name, each checked against its recorded sha256."""
    manifest = source / "MANIFEST.json"
    if not manifest.is_file():
        raise SystemExit(f"error: {manifest} is missing: a wheel without the shipped checkpoints would install "
                         "but load no model (build from a full checkout or its sdist)")
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["checkpoints"]
    except json.JSONDecodeError as err:
        raise SystemExit(f"error: {manifest} is not valid JSON: line {err.lineno}, column {err.colno}: {err.msg}")
    files = ["MANIFEST.json"]
    for name, entry in sorted(entries.items()):
        for key, sha_key in (("file", "sha256"), ("config", "config_sha256"), ("tokenizer", "tokenizer_sha256")):
            if key == "tokenizer" and key not in entry:  # only models with a learned BPE carry one
                continue
            path = source / entry[key]
            if not path.is_file():
                raise SystemExit(f"error: {path} ({name!r} in {manifest}) is missing")
            if _sha256(path) != entry[sha_key]:
                raise SystemExit(f"error: {path} does not match the sha256 {manifest} records for {name!r}; "
                                 f"re-run {entry.get('command', 'its script')} or restore the file")
            files.append(entry[key])
    return files


def copy_checkpoints(source: Path, target: Path) -> list[Path]:
    """Copy the verified checkpoint files from source into target (a fresh folder); the copied paths."""
    files = checkpoint_files(source)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    return [Path(shutil.copy2(source / f, target / f)) for f in files]


class build_py_with_checkpoints(build_py):
    """build_py, plus data/checkpoints -> <build_lib>/glide_minimal/_data/checkpoints (not when editable)."""

    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            self._copied = copy_checkpoints(HERE / SOURCE, Path(self.build_lib) / TARGET)
            self.announce(f"copied {len(self._copied)} checkpoint files into {TARGET}", level=2)

    def get_outputs(self, include_bytecode=True):
        return list(super().get_outputs(include_bytecode)) + [str(p) for p in getattr(self, "_copied", [])]


if __name__ == "__main__":
    setup(cmdclass={"build_py": build_py_with_checkpoints})
