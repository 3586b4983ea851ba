"""Training: AdamW with warmup, EMA of the weights, gradient clipping, mixed precision, DDP.

Every random choice of step k (which images, which t, which noise, which labels dropped, dropout
masks) comes from generators seeded with (seed, k). So resuming from a checkpoint at step k replays
exactly the run that was interrupted, and N processes under `torchrun` each take their slice of the
same global batch a single process would have drawn.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoint import CheckpointError, load_state_dict_into, load_tensors, save_tensors
from .config import Config, config_from_dict
from .datasets import load_dataset
from .diffusion import GaussianDiffusion
from .models import build_model
from .models.clip import clip_loss_terms
from .models.text import get_tokenizer

CHECKPOINT = "checkpoint.safetensors"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is the last good state."""


def _step_generator(seed: int, step: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step) % (2**63))
    return g


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Trainer:
    """Train cfg's model on cfg's data; checkpoints, the config and a JSONL log go to `out_dir`.

    Under torchrun (WORLD_SIZE > 1) it joins the process group (nccl on GPU, gloo on CPU) and wraps the
    model in DistributedDataParallel; train.batch_size stays the global batch.
    """

    def __init__(self, cfg: Config, out_dir: str | Path, *, device: str | None = None, resume: bool = False,
                 progress: bool = True):
        self.cfg, self.out_dir, self.progress = cfg, Path(out_dir), progress
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.device = pick_device(device)
        if self.world > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.world > 1 else 0
        if cfg.train.batch_size % self.world:
            raise ValueError(f"train.batch_size {cfg.train.batch_size} must be divisible by the {self.world} processes")

        if cfg.task == "clip" and cfg.clip.part != "both":
            raise ValueError(f"clip.part {cfg.clip.part!r} builds one CLIP encoder alone (to load a released file); "
                             "contrastive training needs both: set clip.part: both")
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.model = build_model(cfg).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.ddp = (nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                    if self.world > 1 else self.model)
        self.images, self.cond = self._load_data()
        self.precision = self._precision()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step = 0
        self.wall_time_s = 0.0  # training time summed over every resumed segment
        ckpt = self.out_dir / CHECKPOINT
        if resume and ckpt.exists():
            self.load(ckpt)
        elif ckpt.exists() and not resume:
            raise FileExistsError(f"{ckpt} exists: pass resume=True (--resume) to continue it, or choose another output folder")
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(cfg.to_json())
            self._trim_log()

    def _load_data(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training images [N, C, H, W] and their conditioning: {"labels": [N]} or {"tokens", "mask": [N, L]}."""
        images, targets = load_dataset(self.cfg.data, "train")
        if isinstance(targets, torch.Tensor):
            cond = {"labels": targets}
        else:  # captions, tokenized once with the model's tokenizer
            m = self.cfg.clip if self.cfg.task == "clip" else self.cfg.model
            tokens, mask = get_tokenizer(m.tokenizer, m.text_ctx).padded_tokens_and_mask(targets)
            cond = {"tokens": tokens, "mask": mask}
        return images.to(self.device), {k: v.to(self.device) for k, v in cond.items()}

    def _precision(self) -> str:
        p = self.cfg.train.precision
        if p == "auto":
            return "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        if p == "fp16" and self.device.type == "cpu":
            raise ValueError("train.precision fp16 needs a GPU; use fp32 or bf16 on the CPU")
        return p

    # -- schedule and data -------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warmup to train.lr, then constant (the ADM/GLIDE recipe)."""
        warmup = self.cfg.train.warmup_steps
        return self.cfg.train.lr * min(1.0, (step + 1) / warmup) if warmup > 0 else self.cfg.train.lr

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """This rank's slice of step's global batch: x_start, t, noise, model_kwargs."""
        cfg = self.cfg
        g = _step_generator(cfg.train.seed, step, "cpu")
        n = cfg.train.batch_size
        idx = torch.randint(len(self.images), (n,), generator=g)
        t = torch.randint(self.diffusion.num_timesteps, (n,), generator=g)
        noise = torch.randn((n, *self.images.shape[1:]), generator=g)
        drop = torch.rand(n, generator=g) < cfg.data.p_uncond
        local = slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)
        idx, t, noise, drop = idx[local], t[local], noise[local], drop[local]
        idx, drop = idx.to(self.device), drop.to(self.device)
        kwargs = {k: v[idx] for k, v in self.cond.items()}
        if cfg.task == "diffusion":
            if cfg.model.num_classes > 0:
                kwargs["labels"][drop] = cfg.model.num_classes  # the null label (classifier-free guidance)
            elif cfg.model.text_ctx > 0:
                kwargs["tokens"][drop] = 0  # the empty caption: all padding (GLIDE's unconditional input)
                kwargs["mask"][drop] = False
            else:
                kwargs = {}
        return self.images[idx], t.to(self.device), noise.to(self.device), kwargs

    def loss_terms(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, kwargs: dict) -> dict:
        """Per-example terms [N] with a 'loss' among them, for the config's task."""
        if self.cfg.task == "clip":
            if not self.cfg.clip.noised:  # an ordinary CLIP: clean images only
                return clip_loss_terms(self.ddp, x_start, torch.zeros_like(t), kwargs["tokens"], kwargs["mask"])
            return clip_loss_terms(self.ddp, self.diffusion.q_sample(x_start, t, noise), t, kwargs["tokens"], kwargs["mask"])
        if self.cfg.task == "classifier":
            # A noised classifier learns p(y | x_t, t) on images noised exactly as the sampler will see them.
            logits = self.ddp(self.diffusion.q_sample(x_start, t, noise), self.diffusion.model_timesteps(t))
            labels = kwargs["labels"]
            return {"loss": F.cross_entropy(logits.float(), labels, reduction="none"),
                    "accuracy": (logits.argmax(-1) == labels).float()}
        return self.diffusion.training_losses(self.ddp, x_start, t, noise, kwargs)

    # -- one step ----------------------------------------------------------------------------------
    def train_step(self) -> dict:
        step = self.step
        x_start, t, noise, kwargs = self.batch(step)
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(step)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        autocast = torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((self.cfg.train.seed * 7919 + step * 104_729 + self.rank) % (2**63))  # dropout masks
            with autocast:
                terms = self.loss_terms(x_start, t, noise, kwargs)
            loss = terms["loss"].mean()
            names = ["loss"] + sorted(k for k in terms if k != "loss")
            stats = torch.stack([terms[k].mean().detach().float() for k in names])
            if self.world > 1:
                dist.all_reduce(stats)
                stats /= self.world
            if not torch.isfinite(stats).all():
                raise TrainingDiverged(
                    f"loss became {stats[0].item()} at step {step}; stopped before updating the weights. The last good "
                    f"checkpoint ({self.out_dir / CHECKPOINT}, step {self._saved_step()}) is intact. "
                    "Try a lower train.lr, a smaller train.grad_clip, or precision fp32.")
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.model.parameters()):
                p_ema.lerp_(p, 1.0 - self.cfg.train.ema_rate)
        self.step += 1
        return {"step": self.step, **{k: round(v, 6) for k, v in zip(names, stats.tolist())},
                "lr": self.lr_at(step), "grad_norm": round(float(grad_norm), 4)}

    def run(self, max_steps: int | None = None) -> dict:
        """Train until max_steps (default train.max_steps); checkpoint every train.ckpt_every and at the end."""
        max_steps = self.cfg.train.max_steps if max_steps is None else max_steps
        tcfg = self.cfg.train
        start_step, start, wall_before = self.step, time.perf_counter(), self.wall_time_s
        bar = tqdm(total=max_steps, initial=self.step, disable=not self.progress or self.rank != 0, desc="train")
        last = {}
        while self.step < max_steps:
            last = self.train_step()
            self.wall_time_s = wall_before + time.perf_counter() - start
            bar.update(1)
            if self.step % tcfg.log_every == 0 or self.step == max_steps:
                elapsed = time.perf_counter() - start
                last["images_per_s"] = round((self.step - start_step) * tcfg.batch_size / max(elapsed, 1e-9), 1)
                last["wall_time_s"] = round(self.wall_time_s, 1)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
                self._log(last)
            if self.step % tcfg.ckpt_every == 0 or self.step == max_steps:
                self.save()
        bar.close()
        wall = time.perf_counter() - start
        return {**last, "steps_run": self.step - start_step, "run_time_s": round(wall, 1)}

    # -- checkpoints -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema/{k}": v for k, v in self.ema.state_dict().items()})
        for i, state in self.opt.state_dict()["state"].items():
            tensors.update({f"optim/{i}/{k}": torch.as_tensor(v) for k, v in state.items()})
        return tensors

    def save(self) -> None:
        if self.rank == 0:
            meta = {"step": self.step, "config": self.cfg.to_dict(), "format": "glide-minimal-train/1",
                    "wall_time_s": self.wall_time_s,
                    "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}
            save_tensors(self.out_dir / CHECKPOINT, self.state_tensors(), meta)
        if self.world > 1:
            dist.barrier()

    def load(self, path: Path) -> None:
        tensors, meta = load_tensors(path)
        if meta.get("format") != "glide-minimal-train/1":
            raise CheckpointError(f"{path} is not a glide-minimal training checkpoint (format {meta.get('format')!r})")
        if config_from_dict(meta["config"]).model != self.cfg.model:
            raise CheckpointError(f"{path} was trained with a different model config; resume with the config in {path.parent / 'config.json'}")
        group = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        load_state_dict_into(self.model, group("model/"), str(path))
        load_state_dict_into(self.ema, group("ema/"), str(path))
        opt_state = self.opt.state_dict()
        per_param: dict[int, dict] = {}
        for key, value in group("optim/").items():
            index, name = key.split("/")
            per_param.setdefault(int(index), {})[name] = value.to(self.device) if name != "step" else value
        opt_state["state"] = per_param
        self.opt.load_state_dict(opt_state)
        self.step = int(meta["step"])
        self.wall_time_s = float(meta.get("wall_time_s", 0.0))
        if meta.get("grad_scaler") and self.scaler.is_enabled():  # fp16: resume the loss scale too
            self.scaler.load_state_dict(meta["grad_scaler"])

    def _saved_step(self) -> int | None:
        path = self.out_dir / CHECKPOINT
        return load_tensors(path)[1].get("step") if path.exists() else None

    def _log(self, row: dict) -> None:
        if self.rank == 0:
            with open(self.out_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    def _trim_log(self) -> None:
        """After a resume, drop log rows written after the checkpoint (they will be replayed)."""
        log = self.out_dir / "log.jsonl"
        if log.exists():
            keep = []
            for row in log.read_text().splitlines():
                try:
                    if json.loads(row)["step"] <= self.step:
                        keep.append(row)
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a row cut short by a crash mid-write
            log.write_text("".join(r + "\n" for r in keep))


def export_weights(train_dir: str | Path, out_path: str | Path, *, use_ema: bool = True,
                   dtype: torch.dtype = torch.float16, extra_meta: dict | None = None) -> Path:
    """Write the (EMA) weights of a training run as a shippable safetensors file + config JSON beside it."""
    tensors, meta = load_tensors(Path(train_dir) / CHECKPOINT)
    prefix = "ema/" if use_ema else "model/"
    weights = {k[len(prefix):]: v.to(dtype) if v.is_floating_point() else v
               for k, v in tensors.items() if k.startswith(prefix)}
    out_path = Path(out_path)
    save_tensors(out_path, weights, {"config": meta["config"], "step": meta["step"], **(extra_meta or {})})
    out_path.with_suffix(".json").write_text(json.dumps(meta["config"], indent=2, sort_keys=True) + "\n")
    return out_path
