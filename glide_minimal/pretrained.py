"""The registry of shipped checkpoints (no network, ever).

Each entry of a MANIFEST.json names a safetensors file, its config JSON, the sha256 of both, and how it
was made (command, steps, seed, wall time, metrics). Loading verifies the sha256 first and refuses a
file that does not match, naming it.

Where a name is looked up, and in which order, is documented in one place: README.md, "Where checkpoints
come from". `locations()` is that list in code ($GLIDE_MINIMAL_CHECKPOINTS, the user cache, the installed
package data, a source checkout); a name found nowhere is a KeyError listing every place looked in.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_metadata,
    load_state_dict_into,
    load_tensors,
    save_tensors,
)
from .config import config_from_dict
from .fetch import sha256_file
from .models import build_model

__all__ = ["CHECKOUT_DATA", "PACKAGE_DATA", "Location", "available", "cache_dir", "checkpoint_dir", "companions",
           "entry", "load_model", "load_weights", "locate", "locations", "looked_in", "manifest",
           "publish", "publish_run", "search_path", "sha256_file", "smoke_run", "user_checkpoints", "verified_path"]

ENV_CHECKPOINTS = "GLIDE_MINIMAL_CHECKPOINTS"
ENV_CACHE = "GLIDE_MINIMAL_CACHE"
ENV_SMOKE = "GLIDE_MINIMAL_SMOKE"
_PACKAGE = Path(__file__).resolve().parent
# 3. what setup.py's build_py copies into a wheel (absent in a source checkout and an editable install)
PACKAGE_DATA = _PACKAGE / "_data" / "checkpoints"
# 4. a source checkout: the repository root holds pyproject.toml and data/ (absent in site-packages)
CHECKOUT_DATA = _PACKAGE.parent / "data" / "checkpoints"
REINSTALL = "pip install --force-reinstall --no-deps <the same wheel, folder or git+URL>"


@dataclass(frozen=True)
class Location:
    """One place in the lookup order: `label` for messages, `path` (None: not in use here), `why` not."""

    label: str
    path: Path | None
    why: str = ""
    installed: bool = False  # the package's own data: a bad file means a damaged install


def cache_dir() -> Path:
    """The user cache of the GPU tier: $GLIDE_MINIMAL_CACHE, default ~/.cache/glide-minimal."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "glide-minimal"


def smoke_run() -> bool:
    """$GLIDE_MINIMAL_SMOKE set (and not "0"): the book's smoke mode (glide_minimal/tier.py)."""
    return os.environ.get(ENV_SMOKE, "") not in ("", "0")


def user_checkpoints() -> Path:
    """The checkpoint folder of the user cache (its own MANIFEST.json); GPU-tier models are published here.
    A smoke run has a folder of its own, so its seconds-trained models never stand in for real ones."""
    return cache_dir() / ("smoke-checkpoints" if smoke_run() else "checkpoints")


def _is_checkout(folder: Path) -> bool:
    return folder.is_dir() and (folder.parents[1] / "pyproject.toml").is_file()


def locations() -> list[Location]:
    """All four places of the lookup order, in order, each with the folder it means here or why none."""
    env = os.environ.get(ENV_CHECKPOINTS)
    override = f"not searched: ${ENV_CHECKPOINTS} is set"
    if env:
        first = Location(f"${ENV_CHECKPOINTS}", Path(env))
    else:
        first = Location(f"${ENV_CHECKPOINTS}", None, "not set")
    rest = [Location(f"user cache (${ENV_CACHE} or ~/.cache/glide-minimal)", user_checkpoints()),
            Location("installed package data", PACKAGE_DATA, installed=True) if PACKAGE_DATA.is_dir() else
            Location("installed package data", None, f"none at {PACKAGE_DATA} (a source checkout or an editable "
                     "install)", installed=True),
            Location("source checkout", CHECKOUT_DATA) if _is_checkout(CHECKOUT_DATA) else
            Location("source checkout", None, "none (an installed package)")]
    if env:
        rest = [Location(loc.label, None, override, loc.installed) for loc in rest]
    return [first, *rest]


def search_path() -> list[Location]:
    """The folders a name is looked up in, in order (see the module docstring)."""
    return [loc for loc in locations() if loc.path is not None]


def checkpoint_dir() -> Path:
    """The folder `publish` writes to by default: $GLIDE_MINIMAL_CHECKPOINTS if set, else this source
    checkout's data/checkpoints, else the user cache (an installed package's own data is never written)."""
    env = os.environ.get(ENV_CHECKPOINTS)
    if env:
        return Path(env)
    return CHECKOUT_DATA if _is_checkout(CHECKOUT_DATA) else user_checkpoints()


def _read_manifest(path: Path) -> dict[str, dict]:
    """The "checkpoints" table of one MANIFEST.json ({} when the file is absent); bad JSON names file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: line {err.lineno}, column {err.colno}: {err.msg}; "
                              "fix or restore that file") from None
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), dict):
        raise CheckpointError(f"{path} has no \"checkpoints\" table (expected {{\"checkpoints\": {{name: entry}}}})")
    return data["checkpoints"]


def manifest(root: Path | None = None) -> dict[str, dict]:
    """{name: entry} of the MANIFEST.json in `root`; with no root, of every folder of the search path
    (a name in two folders: the earlier folder's entry)."""
    if root is not None:
        return _read_manifest(Path(root) / "MANIFEST.json")
    merged: dict[str, dict] = {}
    for loc in reversed(search_path()):
        merged.update(_read_manifest(loc.path / "MANIFEST.json"))
    return merged


def available(root: Path | None = None) -> list[str]:
    return sorted(manifest(root))


def looked_in() -> str:
    """Each place of the lookup order, numbered: its folder and how many checkpoints it held, or why none."""
    parts = []
    for i, loc in enumerate(locations(), 1):
        if loc.path is None:
            parts.append(f"{i}. {loc.label}: {loc.why}")
            continue
        manifest_path = loc.path / "MANIFEST.json"
        names = _read_manifest(manifest_path)
        held = (f"{len(names)} checkpoints" if names
                else "no checkpoints" if manifest_path.exists() else "no MANIFEST.json")
        parts.append(f"{i}. {loc.label} {loc.path} ({held})")
    return f"looked in: {'; '.join(parts)}"


def locate(name: str, root: Path | None = None) -> tuple[Location, dict]:
    """(the Location whose MANIFEST.json lists `name`, its entry): the first of the search path, or `root`."""
    if root is not None:
        entries = manifest(root)
        if name not in entries:
            raise KeyError(f"unknown checkpoint {name!r}; shipped: {', '.join(sorted(entries)) or '(none)'} "
                           f"(in {root})")
        return Location("folder", Path(root)), entries[name]
    for loc in search_path():
        entries = _read_manifest(loc.path / "MANIFEST.json")
        if name in entries:
            return loc, entries[name]
    known = available()
    raise KeyError(f"unknown checkpoint {name!r}; shipped: {', '.join(known) or '(none)'}; {looked_in()}")


def entry(name: str, root: Path | None = None) -> dict:
    return locate(name, root)[1]


def companions(name: str, root: Path | None = None) -> dict[str, str]:
    """The models that work beside checkpoint `name`, as its MANIFEST entry names them: {role: name}, e.g.
    {"upsample": "tutorial-text-upsample", "clip": "tutorial-text-clip", ...} ({} if it names none, and for a
    .safetensors path, which has no entry)."""
    if Path(name).suffix == ".safetensors":
        return {}
    return dict(entry(name, root).get("companions", {}))


def _check_file(path: Path, expected: str, name: str, what: str, loc: Location, command: str) -> None:
    fix = (f"the installed glide-minimal package is damaged; reinstall it: {REINSTALL}" if loc.installed
           else None)
    if not path.exists():
        raise CheckpointError(f"{what} {path} for {name!r} is missing" + (f": {fix}" if fix else ""))
    digest = sha256_file(path)
    if digest != expected:
        raise CheckpointError(f"{what} {path} has sha256 {digest[:12]}... but MANIFEST.json records "
                              f"{expected[:12]}...: "
                              + (fix or f"the file is corrupt or was replaced; re-run {command}"))


def learned_tokenizer(config: dict) -> str | None:
    """The section ("model" or "clip") of a config dict whose tokenizer is a learned BPE with a file, else None."""
    for section in ("model", "clip"):
        part = config.get(section) or {}
        if part.get("tokenizer") == "bpe" and part.get("tokenizer_file"):
            return section
    return None


def with_tokenizer_beside(config: dict, folder: Path, stem: str) -> dict:
    """config, its learned BPE (if any) copied to folder/STEM.tokenizer.json and named there by a relative
    tokenizer_file (so the weights and the tokenizer move together)."""
    section = learned_tokenizer(config)
    if section is None:
        return config
    config = json.loads(json.dumps(config))
    name = f"{stem}.tokenizer.json"
    source = Path(config[section]["tokenizer_file"])
    if source.resolve() != (folder / name).resolve():
        atomic_write_bytes(folder / name, source.read_bytes())
    config[section]["tokenizer_file"] = name
    return config


def resolve_tokenizer(config: dict, folder: Path) -> dict:
    """config with a relative learned-BPE tokenizer_file made absolute against `folder` (where the weights are)."""
    section = learned_tokenizer(config)
    if section is not None and not Path(config[section]["tokenizer_file"]).is_absolute():
        config = {**config, section: {**config[section],
                                      "tokenizer_file": str(folder / config[section]["tokenizer_file"])}}
    return config


def source_tokenizer(source: str | Path, root: Path | None = None) -> str:
    """The learned-BPE tokenizer file of checkpoint `source` (a store name or a .safetensors path), "" if its
    model reads captions another way. A model fine-tuned from it must read its captions with this tokenizer:
    its token embedding rows mean this tokenizer's tokens."""
    path = Path(source)
    if path.suffix == ".safetensors":
        config = resolve_tokenizer(load_metadata(path).get("config", {}), path.parent)
    else:
        loc, e = locate(str(source), root)
        if "tokenizer" not in e:
            return ""
        verified_path(str(source), root)  # the tokenizer's sha256 with the rest
        return str(loc.path / e["tokenizer"])
    section = learned_tokenizer(config)
    return config[section]["tokenizer_file"] if section else ""


def verified_path(name: str, root: Path | None = None) -> Path:
    """The checkpoint file of `name`, after checking its sha256 (and its config JSON's) against the manifest.

    A mismatch in the installed package's own data asks for a reinstall; elsewhere, for the command that
    made the file."""
    loc, e = locate(name, root)
    command = e.get("command", "its script")
    path = loc.path / e["file"]
    _check_file(path, e["sha256"], name, "checkpoint file", loc, command)
    if "config_sha256" in e and "config" in e:
        _check_file(loc.path / e["config"], e["config_sha256"], name, "config file", loc, command)
    if "tokenizer_sha256" in e:
        _check_file(loc.path / e["tokenizer"], e["tokenizer_sha256"], name, "tokenizer file", loc, command)
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
        path = verified_path(str(name), root)
        tensors, meta = load_tensors(path)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    return weights, resolve_tokenizer(meta["config"], path.parent)


def publish(name: str, state_dict: dict[str, torch.Tensor], config: dict, *, record: dict,
            dtype: torch.dtype = torch.float16, root: Path | None = None,
            companions: dict[str, str] | None = None) -> Path:
    """Write `name`.safetensors (+ `name`.json config) and its MANIFEST entry (sha256, record, companions:
    {role: checkpoint name}; None keeps the ones an earlier entry of `name` named)."""
    root = root or checkpoint_dir()
    root.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    config = with_tokenizer_beside(config, root, name)
    path = root / f"{name}.safetensors"
    save_tensors(path, weights, {"config": config, "name": name})
    config_path = root / f"{name}.json"
    atomic_write_bytes(config_path, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    entries = manifest(root)
    kind = config.get("kind") or config.get("task", "diffusion")
    if companions is None:
        companions = entries.get(name, {}).get("companions", {})
    entries[name] = {"file": path.name, "config": config_path.name, "kind": kind, "sha256": sha256_file(path),
                     "config_sha256": sha256_file(config_path), "dtype": str(dtype).removeprefix("torch."), **record,
                     **({"tokenizer": f"{name}.tokenizer.json",
                         "tokenizer_sha256": sha256_file(root / f"{name}.tokenizer.json")}
                        if learned_tokenizer(config) else {}),
                     **({"companions": dict(sorted(companions.items()))} if companions else {})}
    payload = json.dumps({"checkpoints": dict(sorted(entries.items()))}, indent=2) + "\n"
    atomic_write_bytes(root / "MANIFEST.json", payload.encode())
    return path


def publish_run(run: Path, name: str, command: str, *, root: Path | None = None,
                companions: dict[str, str] | None = None, wall_time_s: float | None = None,
                threads: int | None = None) -> Path:
    """Publish a training run's EMA weights (fp16) as checkpoint `name`, recording how it was made: `command`,
    steps, seed, training wall time (the run's own, summed over resumed segments), threads, the last logged
    losses, and for a fine-tuned run (train.init_from) the checkpoint it started from with its sha256."""
    run = Path(run)
    tensors, meta = load_tensors(run / "checkpoint.safetensors")
    ema = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
    rows = [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines() if r.strip()]
    cfg, last = meta["config"], rows[-1]
    wall = wall_time_s or meta.get("wall_time_s") or last["step"] * cfg["train"]["batch_size"] / last["images_per_s"]
    record = {"command": command, "train_config": cfg["name"], "steps": meta["step"], "seed": cfg["train"]["seed"],
              "wall_time_s": round(wall, 1), **({"threads": threads} if threads else {}),
              "metrics": {k: last[k] for k in ("loss", "mse", "vb", "accuracy") if k in last}}
    source = cfg["train"].get("init_from")
    if source:  # a fine-tuned model: what it started from, as it was when this one was published
        entries = manifest()
        record["init_from"] = source
        record["init_from_sha256"] = entries[source]["sha256"] if source in entries else sha256_file(source)
    return publish(name, ema, cfg, record=record, dtype=torch.float16, root=root, companions=companions)


def load_model(name: str, device: str | torch.device = "cpu"):
    """(model in eval mode, Config) of a shipped diffusion checkpoint."""
    weights, config = load_weights(name)
    if "kind" in config:
        raise ValueError(f"{name!r} is a {config['kind']!r} checkpoint, not a diffusion model; "
                         "load it with its own loader (e.g. evaluators.load_evaluator)")
    cfg = config_from_dict(config)
    model = build_model(cfg)
    load_state_dict_into(model, weights, name)
    return model.to(device).eval().requires_grad_(False), cfg
