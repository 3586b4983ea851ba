"""The registry of shipped checkpoints in data/checkpoints/ (no network, ever).

Each entry of MANIFEST.json names a safetensors file, its config JSON, the sha256 of both, and how it
was made (command, steps, seed, wall time, metrics). Loading verifies the sha256 first and refuses a
file that does not match, naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .checkpoint import CheckpointError, atomic_write_bytes, load_tensors, save_tensors


def checkpoint_dir() -> Path:
    """data/checkpoints of this checkout, or $GLIDE_MINIMAL_CHECKPOINTS."""
    env = os.environ.get("GLIDE_MINIMAL_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data" / "checkpoints"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(root: Path | None = None) -> dict[str, dict]:
    path = (root or checkpoint_dir()) / "MANIFEST.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())["checkpoints"]


def available(root: Path | None = None) -> list[str]:
    return sorted(manifest(root))


def entry(name: str, root: Path | None = None) -> dict:
    entries = manifest(root)
    if name not in entries:
        raise KeyError(f"unknown checkpoint {name!r}; shipped: {', '.join(sorted(entries)) or '(none)'} "
                       f"(in {root or checkpoint_dir()})")
    return entries[name]


def companion(name: str, role: str) -> str:
    """The registry name of the model that plays `role` beside `name`; a trailing "-gpu" stays last.

    companion("tutorial-text", "upsample") = "tutorial-text-upsample";
    companion("tutorial-text-gpu", "upsample-inpaint") = "tutorial-text-upsample-inpaint-gpu".
    """
    stem, gpu = (name[:-len("-gpu")], "-gpu") if name.endswith("-gpu") else (name, "")
    return f"{stem}-{role}{gpu}"


def strip_role(name: str, roles: tuple[str, ...]) -> str:
    """The inverse of companion: strip_role("tutorial-text-upsample-inpaint-gpu", ("upsample-inpaint",)) =
    "tutorial-text-gpu" (the first matching role, longest first; the name itself if none matches)."""
    stem, gpu = (name[:-len("-gpu")], "-gpu") if name.endswith("-gpu") else (name, "")
    for role in sorted(roles, key=len, reverse=True):
        if stem.endswith(f"-{role}"):
            return stem[:-len(role) - 1] + gpu
    return name


def verified_path(name: str, root: Path | None = None) -> Path:
    """The checkpoint file of `name`, after checking its sha256 against the manifest."""
    root = root or checkpoint_dir()
    e = entry(name, root)
    path = root / e["file"]
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} for {name!r} is missing")
    digest = sha256_file(path)
    if digest != e["sha256"]:
        raise CheckpointError(f"checkpoint file {path} has sha256 {digest[:12]}... but MANIFEST.json records "
                              f"{e['sha256'][:12]}...: the file is corrupt or was replaced; re-run {e.get('command', 'its script')}")
    return path


def load_weights(name: str | Path, root: Path | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(float32 state dict, config dict) of a shipped checkpoint, sha256-verified; or of a .safetensors
    path with the config in its metadata (e.g. written by `glide-minimal convert`; no manifest, no sha256)."""
    path = Path(name)
    if path.suffix == ".safetensors":  # registry names have no suffix
        tensors, meta = load_tensors(path)  # names a missing file in its error
        if "config" not in meta:
            raise CheckpointError(f"{path} has no config in its metadata; write it with glide-minimal convert")
    else:
        tensors, meta = load_tensors(verified_path(str(name), root))
    weights = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return weights, meta["config"]


def publish(name: str, state_dict: dict[str, torch.Tensor], config: dict, *, record: dict,
            dtype: torch.dtype = torch.float16, root: Path | None = None) -> Path:
    """Write `name`.safetensors (+ `name`.json config) and its MANIFEST entry (sha256, record)."""
    root = root or checkpoint_dir()
    root.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    path = root / f"{name}.safetensors"
    save_tensors(path, weights, {"config": config, "name": name})
    config_path = root / f"{name}.json"
    atomic_write_bytes(config_path, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    entries = manifest(root)
    kind = config.get("kind") or config.get("task", "diffusion")
    entries[name] = {"file": path.name, "config": config_path.name, "kind": kind, "sha256": sha256_file(path),
                     "config_sha256": sha256_file(config_path), "dtype": str(dtype).removeprefix("torch."), **record}
    payload = json.dumps({"checkpoints": dict(sorted(entries.items()))}, indent=2) + "\n"
    atomic_write_bytes(root / "MANIFEST.json", payload.encode())
    return path


def load_evaluator(name: str = "digits-evaluator", device: str | torch.device = "cpu"):
    """A shipped independent evaluator (see metrics.py): "digits-evaluator" or "shapes-evaluator-16"."""
    from .checkpoint import load_state_dict_into
    from .metrics import DigitClassifier, DigitEvaluator, ShapesClassifier, ShapesEvaluator

    weights, config = load_weights(name)
    kinds = {"digit-evaluator": (DigitClassifier, DigitEvaluator), "shapes-evaluator": (ShapesClassifier, ShapesEvaluator)}
    if config.get("kind") not in kinds:
        raise CheckpointError(f"{name!r} is a {config.get('kind')!r} checkpoint, not an evaluator ({', '.join(kinds)})")
    network, judge = kinds[config["kind"]]
    model = network(config["image_size"])
    load_state_dict_into(model, weights, name)
    return judge(model.to(device))


def load_model(name: str, device: str | torch.device = "cpu"):
    """(model in eval mode, Config) of a shipped diffusion checkpoint."""
    from .checkpoint import load_state_dict_into
    from .config import config_from_dict
    from .models import build_model

    weights, config = load_weights(name)
    if "kind" in config:
        raise ValueError(f"{name!r} is a {config['kind']!r} checkpoint, not a diffusion model; "
                         "load it with its own loader (e.g. pretrained.load_evaluator)")
    cfg = config_from_dict(config)
    model = build_model(cfg)
    load_state_dict_into(model, weights, name)
    return model.to(device).eval().requires_grad_(False), cfg
