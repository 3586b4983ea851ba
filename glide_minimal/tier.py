"""One switch for the book's two tiers: GLIDE_MINIMAL_TIER = cpu | gpu (default: gpu when CUDA is available).

The same notebooks run on a laptop CPU with the small shipped models (tier "cpu") or on one GPU with larger
ones (tier "gpu": the `<name>-gpu` config of each model). Every chapter's setup cell calls `gm.tier()`; the
Tier it returns is the chapter's only source of a device, a config or a checkpoint name.

A GPU-tier model comes from the store (pretrained.py: the shipped registry, or the user cache
$GLIDE_MINIMAL_CACHE / ~/.cache/glide-minimal, with the same MANIFEST and sha256 rules). If it is in neither,
`Tier.checkpoint` trains it right there with its config's recipe, for at most $GLIDE_MINIMAL_GPU_MINUTES
minutes, resuming an interrupted run, and publishes it into the user cache, where later chapters and re-runs
find it. A cached model whose recipe is not its config's is refused.

Smoke mode ($GLIDE_MINIMAL_SMOKE=1 with the gpu tier) runs the GPU branch on a CPU in seconds: the GPU-tier
configs keep their image sizes and layout but shrink to a few channels and a few training steps (SMOKE), and
are cached apart from real models. Only quality claims relax: `Tier.claim` reports them instead of asserting.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

try:
    import fcntl
except ImportError:  # Windows: no lock (run one chapter at a time there)
    fcntl = None

from . import pretrained
from .checkpoint import CheckpointError
from .checks import check_finite_range
from .config import Config, available_configs, load_config
from .pipelines import load_pipeline
from .pipelines.loading import INPAINT_GROUPS
from .train import Trainer, recipe_differences

ENV_TIER = "GLIDE_MINIMAL_TIER"
ENV_MINUTES = "GLIDE_MINIMAL_GPU_MINUTES"
# A JSON-lines file that claims and on-the-spot trainings are appended to (scripts/run_book.py reads it)
ENV_REPORT = "GLIDE_MINIMAL_REPORT"
# When set, tier() sets torch's thread count to it, over the chapter's own (scripts/run_book.py --jobs)
ENV_THREADS = "GLIDE_MINIMAL_THREADS"
TIERS = ("cpu", "gpu")
# Training minutes per GPU-tier model a chapter has to train itself. The book's GPU tier trains 15 models
# (tests/test_tier.py counts them), so the default gives a whole run on one GPU an hour of training at most,
# plus the chapters' execution.
DEFAULT_GPU_MINUTES = 4.0
# Smoke mode: every GPU-tier config shrunk to a few steps of a few channels, one residual block per level and
# attention only at 8 px (image sizes, levels and inputs kept). Keys a config does not use (a CLIP's model.*,
# a U-Net's clip.*) are inert.
SMOKE: dict[str, Any] = {
    "model.model_channels": 16, "model.num_head_channels": 16, "model.num_res_blocks": 1,
    "model.attention_resolutions": [8], "model.text_width": 32, "model.text_layers": 1,
    "model.text_heads": 2, "clip.width": 32, "clip.layers": 1, "clip.heads": 2, "clip.text_width": 32,
    "clip.text_layers": 1, "clip.text_heads": 2, "clip.embed_dim": 16, "data.num_scenes": 64,
    "train.batch_size": 8, "train.max_steps": 4, "train.warmup_steps": 1, "train.log_every": 2,
    "train.ckpt_every": 2, "data.num_workers": 0}


@dataclass(frozen=True)
class Tier:
    """Where and at what size a chapter runs: `name` (cpu | gpu), `device`, `smoke`, and `minutes`, the
    training budget of each GPU-tier model that has to be trained on the spot."""

    name: str
    device: torch.device
    smoke: bool = False
    minutes: float = DEFAULT_GPU_MINUTES

    def __str__(self) -> str:
        text = f"device={self.device.type}  tier={self.name}"
        if self.smoke:
            text += "  SMOKE RUN: seconds-trained stand-ins for the GPU-tier models; quality claims are not checked"
        return text

    def config_name(self, name: str) -> str:
        """The config of model `name` on this tier: `name` on the CPU tier, `name`-gpu on the GPU tier."""
        if self.name == "cpu" or name.endswith("-gpu"):
            return name
        gpu = f"{name}-gpu"
        if gpu not in available_configs():
            raise KeyError(f"{name!r} has no GPU-tier config {gpu!r}; GPU-tier configs: "
                           f"{', '.join(c for c in available_configs() if c.endswith('-gpu'))}")
        return gpu

    def config(self, name: str, overrides: dict[str, Any] | None = None) -> Config:
        """The Config of model `name` on this tier (shrunk in a smoke run), with `overrides` on top."""
        return load_config(self.config_name(name), {**(SMOKE if self.smoke else {}), **(overrides or {})})

    def checkpoint(self, name: str) -> str:
        """The checkpoint name of model `name` on this tier, made to exist: found in the store (a cached one
        must match its config's recipe), else trained here within the budget and published to the user cache."""
        if name in INPAINT_GROUPS:  # an alias: the group is its text model's
            alias = name if self.name == "cpu" or name.endswith("-gpu") else f"{name}-gpu"
            self.checkpoint(INPAINT_GROUPS[alias])
            return alias
        ckpt = self.config_name(name)
        if self.name == "cpu":
            return ckpt  # shipped; a missing one is a KeyError that names every place looked in when loaded
        cfg = self.config(ckpt)
        with cache_lock():  # another process (a chapter run beside this one) may be training the same model
            return self._find_or_train(ckpt, cfg)

    def _find_or_train(self, ckpt: str, cfg: Config) -> str:
        if ckpt in pretrained.available():
            # the entry's config JSON, not the weights: loading them (and their sha256) is the loader's work
            where, entry = pretrained.locate(ckpt)
            saved = json.loads((where.path / entry["config"]).read_text(encoding="utf-8"))
            differences = recipe_differences(saved, cfg)
            if differences:
                raise CheckpointError(f"the checkpoint {ckpt!r} in {where.path} was trained from another config "
                                      f"than {ckpt!r} ({'; '.join(differences[:4])}): remove it from that "
                                      "folder's MANIFEST.json to train it again, or set another GLIDE_MINIMAL_CACHE")
            return ckpt
        self.train(ckpt, cfg)
        return ckpt

    def train(self, name: str, cfg: Config) -> Path:
        """Train `cfg` for at most `minutes` (resuming an interrupted run) and publish it as `name` into the
        user cache, with the GPU-tier versions of its CPU model's companions."""
        if cfg.train.init_from:  # a fine-tuned model starts from its source: that one first
            self.checkpoint(cfg.train.init_from)
        run = pretrained.cache_dir() / ("smoke-runs" if self.smoke else "runs") / name
        start = time.perf_counter()  # rendering the data happens here, outside the training budget
        trainer = Trainer(cfg, run, device=str(self.device), resume=True, progress=not self.smoke)
        setup_s = time.perf_counter() - start
        budget = self.minutes * 60 - trainer.wall_time_s
        print(f"{name}: not in the store; training it here"
              + (f", {budget / 60:.1f} minutes at most" if budget > 0 else "")
              + (f", resuming {run} at step {trainer.step}" if trainer.resumed_from else f", into {run}"))
        if budget > 0 and trainer.step < cfg.train.max_steps:
            result = trainer.run(time_budget_s=None if self.smoke else budget)
            report(trained=name, seconds=result["run_time_s"], steps=trainer.step, stopped=result["stopped"],
                   setup_s=round(setup_s, 1), batch=cfg.train.batch_size)
        cpu_name = name.removesuffix("-gpu")
        cpu_companions = pretrained.companions(cpu_name) if cpu_name in pretrained.available() else {}
        companions = {role: self.config_name(other) for role, other in cpu_companions.items()
                      if f"{other}-gpu" in available_configs()}
        command = (f"GLIDE_MINIMAL_TIER=gpu GLIDE_MINIMAL_GPU_MINUTES={self.minutes:g} "
                   + ("GLIDE_MINIMAL_SMOKE=1 " if self.smoke else "") + f"gm.tier().checkpoint({cpu_name!r})")
        return pretrained.publish_run(run, name, command, root=pretrained.user_checkpoints(),
                                      companions=companions)

    def load_pipeline(self, name: str):
        """gm.load_pipeline of model `name` on this tier, on this tier's device; a companion (upsampler, CLIP,
        classifier, inpainting stage) is made to exist when first used."""
        return load_pipeline(self.checkpoint(name), self.device, resolve=self.checkpoint)

    def load_model(self, name: str) -> tuple[torch.nn.Module, Config]:
        """(model in eval mode on this tier's device, Config) of model `name` on this tier."""
        return pretrained.load_model(self.checkpoint(name), self.device)

    def pick(self, cpu, gpu, smoke=None):
        """A chapter's workload by tier (steps, samples): `cpu`, `gpu`, or in a smoke run `smoke` (default `cpu`)."""
        if self.smoke:
            return cpu if smoke is None else smoke
        return gpu if self.name == "gpu" else cpu

    def claim(self, holds: bool, claim: str) -> None:
        """A chapter's quality claim: asserted, except in a smoke run, whose stand-in models cannot make it."""
        report(claim=claim, holds=bool(holds))
        if self.smoke:
            print(f"smoke run, not checked: {claim} ({'holds' if holds else 'does not hold'} here)")
        elif not holds:
            raise AssertionError(claim)


_held = 0  # how deeply this process holds the cache lock (a fine-tuned model trains its source inside it)


@contextmanager
def cache_lock():
    """Hold the user cache's lock file while a model is looked up, trained and published, so that processes
    sharing the cache train each model once and never interleave MANIFEST.json updates (POSIX; elsewhere
    a no-op). Re-entrant within a process."""
    global _held
    if _held or fcntl is None:
        _held += 1
        try:
            yield
        finally:
            _held -= 1
        return
    folder = pretrained.cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held += 1
        try:
            yield
        finally:
            _held -= 1
            fcntl.flock(handle, fcntl.LOCK_UN)


def report(**row) -> None:
    """Append `row` (with the peak GPU memory so far) to $GLIDE_MINIMAL_REPORT, if set."""
    path = os.environ.get(ENV_REPORT)
    if not path:
        return
    if torch.cuda.is_available():
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": round(time.time(), 1), **row}) + "\n")


def tier() -> Tier:
    """The tier this process runs: $GLIDE_MINIMAL_TIER (cpu | gpu; default gpu when CUDA is available),
    $GLIDE_MINIMAL_SMOKE and $GLIDE_MINIMAL_GPU_MINUTES, checked; $GLIDE_MINIMAL_THREADS, if set, becomes
    torch's thread count."""
    cuda = torch.cuda.is_available()
    name = os.environ.get(ENV_TIER) or ("gpu" if cuda else "cpu")
    if name not in TIERS:
        raise ValueError(f"{ENV_TIER}={name!r} is not a tier; choose one of: {', '.join(TIERS)}")
    smoke = pretrained.smoke_run()
    if smoke and name != "gpu":
        raise ValueError(f"{pretrained.ENV_SMOKE} runs the GPU tier's branch on a CPU; set {ENV_TIER}=gpu with it, "
                         f"or unset {pretrained.ENV_SMOKE}")
    if name == "gpu" and not cuda and not smoke:
        raise RuntimeError(f"{ENV_TIER}=gpu needs a CUDA GPU, and torch sees none here. To run the GPU tier's code "
                           f"on this CPU in seconds (tiny stand-in models, quality claims not checked): "
                           f"{ENV_TIER}=gpu {pretrained.ENV_SMOKE}=1; for the CPU tier: {ENV_TIER}=cpu")
    raw = os.environ.get(ENV_MINUTES) or DEFAULT_GPU_MINUTES
    try:
        minutes = check_finite_range(ENV_MINUTES, float(raw), 0, lo_open=True)
    except ValueError:
        raise ValueError(f"{ENV_MINUTES} must be a number of minutes > 0, got {raw!r}") from None
    threads = os.environ.get(ENV_THREADS)
    if threads:
        torch.set_num_threads(int(check_finite_range(ENV_THREADS, float(threads), 1)))
    return Tier(name, torch.device("cuda" if cuda else "cpu"), smoke, minutes)
