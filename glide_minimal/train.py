"""Training: AdamW with warmup, EMA of the weights, gradient clipping, mixed precision, DDP or FSDP,
activation checkpointing and gradient accumulation.

Every random choice of step k (which images, which t, which noise, which labels dropped, dropout
masks) comes from generators seeded with (seed, k). So resuming from a checkpoint at step k replays
exactly the run that was interrupted, and N processes under `torchrun` each take their slice of the
same global batch a single process would have drawn. With train.grad_accum_steps = k each rank splits
its slice into k micro-batches and runs them one after another before the single update.
"""
from __future__ import annotations

import contextlib
import copy
import json
import numbers
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .captions import changed_captions
from .checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    load_metadata,
    load_state_dict_into,
    load_tensors,
    remove_stale_temp_files,
    save_tensors,
)
from .checks import check_device, check_finite_range, default_device
from .conditioning import training_batch
from .config import Config, low_res_size, validate
from .datasets import load_dataset
from .diffusion import GaussianDiffusion
from .finetune import init_from_pretrained
from .imagetext import STREAMED, StreamingData, training_captions
from .masks import area_downsample
from .models import build_model
from .models.clip import clip_loss_terms
from .models.learned_bpe import LearnedBPE, learn_bpe
from .models.text import config_tokenizer
from .parallel import (
    data_parallel,
    enable_activation_checkpointing,
    full_optimizer_state,
    full_state_dict,
    full_tensor,
    gradient_sync,
    is_sharded,
    load_sharded,
    local_tensor,
    shard,
)
from .pretrained import source_tokenizer, with_tokenizer_beside

CHECKPOINT = "checkpoint.safetensors"
RUN_FILES = (CHECKPOINT, "config.json", "log.jsonl")  # what a run folder holds; each is replaced atomically
# Config keys a resume may change: they decide how a run is watched, how far it goes, how a step is spread over
# processes and micro-batches (the same global batch and gradient, up to float rounding) and how it is sampled
# later, never what a step computes. Every other key is the recipe, and must match the checkpoint's.
RESUMABLE_KEYS = frozenset({"name", "description", "train.max_steps", "train.log_every", "train.ckpt_every",
                            "train.parallel", "train.activation_checkpointing", "train.grad_accum_steps",
                            "diffusion.sample_respacing", "data.low_res_aug_sample",
                            # where the learned BPE is: the run folder's tokenizer.json (its content is the recipe)
                            "model.tokenizer_file", "clip.tokenizer_file"})
TOKENIZER = "tokenizer.json"  # a run's learned BPE (model.tokenizer: bpe)


class TrainingDiverged(RuntimeError):
    """The loss, the gradients or the updated weights became NaN or infinite. Nothing non-finite is ever saved:
    the checkpoint on disk (if any) is the last good state."""


def _flatten(tree: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recipe_differences(saved: dict, cfg: Config) -> list[str]:
    """'key: <checkpoint's value> in the checkpoint, <cfg's> now' for every recipe key (not RESUMABLE_KEYS) that
    differs between a checkpoint's config dict and cfg, sorted by key. Compared as JSON (tuples are lists there)."""
    now = _flatten(json.loads(cfg.to_json()))
    # A key the checkpoint lacks is newer than the code that wrote it: that code behaved as its default does.
    then = {**_flatten(json.loads(Config(name="").to_json())), **_flatten(saved)}
    return [f"{key}: {then.get(key)!r} in the checkpoint, {now.get(key)!r} now"
            for key in sorted(now.keys() | then.keys()) if key not in RESUMABLE_KEYS and then.get(key) != now.get(key)]


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors holding a NaN or an infinity (this rank's shard of each, under FSDP).

    Runs every step on the weights, so it is cheap: a NaN or inf anywhere makes a tensor's sum non-finite, and a
    sum costs a fraction of isfinite().all() on the CPU; only tensors whose sum is not finite are checked element
    by element (a finite tensor whose float32 sum overflows is no false alarm). The sums are stacked so that each
    device syncs once, not once per tensor (AdamW's step counters live on the CPU, the rest on the GPU).
    """
    floating = {k: local_tensor(v) for k, v in tensors.items() if v.is_floating_point()}
    by_device: dict[torch.device, list[str]] = {}
    for key, value in floating.items():
        by_device.setdefault(value.device, []).append(key)
    suspects = []
    for keys in by_device.values():
        sums = torch.stack([floating[k].detach().sum(dtype=torch.float32) for k in keys])
        suspects += [k for k, ok in zip(keys, torch.isfinite(sums).tolist()) if not ok]
    return [k for k in suspects if not torch.isfinite(floating[k]).all()]


def hard_negative_tokens(captions: list[str], k: int, tokenizer, seed: int) -> dict[str, torch.Tensor]:
    """{"negative_tokens", "negative_mask": [N, k, L]}: for each caption, k of captions.changed_captions (drawn
    without replacement while there are enough, with a generator seeded by `seed`), tokenized."""
    g, rows = torch.Generator().manual_seed(seed), []
    for text in captions:
        pool = changed_captions(text)
        order = torch.cat([torch.randperm(len(pool), generator=g) for _ in range(-(-k // len(pool)))])[:k]
        rows += [pool[j] for j in order.tolist()]
    tokens, mask = tokenizer.padded_tokens_and_mask(rows)
    return {"negative_tokens": tokens.view(len(captions), k, -1), "negative_mask": mask.view(len(captions), k, -1)}


class Trainer:
    """Train cfg's model on cfg's data; checkpoints, the config and a JSONL log go to `out_dir`.

    Under torchrun it joins the process group (nccl on GPU, gloo on CPU) and wraps the model in
    DistributedDataParallel (train.parallel: ddp) or shards it with fully_shard (train.parallel: fsdp);
    train.batch_size stays the global batch. See glide_minimal/parallel.py.
    """

    def __init__(self, cfg: Config, out_dir: str | Path, *, device: str | None = None, resume: bool = False,
                 progress: bool = True):
        validate(cfg)  # a Config built or edited in code has not been through load_config's checks
        self.cfg, self.out_dir, self.progress = cfg, Path(out_dir), progress
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        # Launched by torchrun (its env:// variables are set): even one process joins a process group, so
        # `torchrun --nproc-per-node 1` runs the real DDP / FSDP code path.
        self.distributed = self.world > 1 or all(k in os.environ for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"))
        self.device = check_device(device) if device else default_device()
        if self.distributed and not dist.is_initialized():
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        accum = cfg.train.grad_accum_steps
        if cfg.train.batch_size % (self.world * accum):
            raise ValueError(f"train.batch_size {cfg.train.batch_size} must be divisible by the {self.world} processes "
                             f"x train.grad_accum_steps {accum} = {self.world * accum} "
                             "(equal micro-batches on every rank)")

        if cfg.task == "clip" and cfg.clip.part != "both":
            raise ValueError(f"clip.part {cfg.clip.part!r} builds one CLIP encoder alone (to load a released file); "
                             "contrastive training needs both: set clip.part: both")
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.model = build_model(cfg).to(self.device)
        if cfg.train.init_from and not (resume and (self.out_dir / CHECKPOINT).exists()):
            init_from_pretrained(self.model, cfg.train.init_from)  # fine-tuning starts from a shipped model
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.precision = self._precision()
        self.ddp = self._parallelize()  # the module to call: DDP, the sharded model itself, or the plain model
        # Created after sharding: fully_shard replaces every parameter by its shard (a DTensor).
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self._prepare_tokenizer(resume)
        # Your own folder or shards stream from disk (imagetext.py); the built-in datasets sit in memory.
        self.stream = (StreamingData(self.cfg, self.rank, self.world, self.device) if cfg.data.dataset in STREAMED
                       else None)
        self.images, self.cond = (None, {}) if self.stream else self._load_data()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step = 0
        self.wall_time_s = 0.0  # training time summed over every resumed segment
        self.saved_step: int | None = None  # the step of the checkpoint on disk; every one of them is finite
        self.resumed_from: Path | None = None
        ckpt = self.out_dir / CHECKPOINT
        if resume and ckpt.exists():
            self.load(ckpt)
            self.resumed_from = ckpt
        elif ckpt.exists() and not resume:
            raise FileExistsError(f"{ckpt} exists: pass resume=True (--resume) to continue it, "
                                  "or choose another output folder")
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            # A process killed mid-write leaves its temp file; nothing of this run writes yet, so any is stale.
            remove_stale_temp_files(self.out_dir, RUN_FILES)
            atomic_write_bytes(self.out_dir / "config.json", self.cfg.to_json().encode())
            self._trim_log()

    def _prepare_tokenizer(self, resume: bool) -> None:
        """model.tokenizer (clip.tokenizer) bpe: the run's tokenizer.json, learned from the training captions
        (rank 0; the others wait), kept on resume, copied when the config names one or train.init_from has one
        (fine-tuning); the config then points at it."""
        section = self.cfg.clip if self.cfg.task == "clip" else self.cfg.model
        if section.tokenizer != "bpe" or (self.cfg.task != "clip" and not section.text_ctx):
            return
        if (self.out_dir / CHECKPOINT).exists() and not resume:
            return  # __init__ refuses to overwrite the run; its tokenizer stays untouched too
        self.cfg = copy.deepcopy(self.cfg)  # the caller's Config keeps its own tokenizer_file
        section = self.cfg.clip if self.cfg.task == "clip" else self.cfg.model
        path = (self.out_dir / TOKENIZER).resolve()
        keep = resume and path.exists() and (self.out_dir / CHECKPOINT).exists()
        # Fine-tuning keeps the source model's tokenizer: its token embeddings mean that tokenizer's tokens.
        source = section.tokenizer_file or (self.cfg.train.init_from and source_tokenizer(self.cfg.train.init_from))
        if self.rank == 0 and not keep:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if source:
                tokenizer = LearnedBPE.load(source, section.text_ctx)
            else:
                size = section.vocab_size if self.cfg.task == "clip" else section.text_vocab_size
                tokenizer = learn_bpe(training_captions(self.cfg), size, section.text_ctx)
            tokenizer.save(path)
        if self.distributed:
            dist.barrier()
        section.tokenizer_file = str(path)
        tokens = len(config_tokenizer(section))
        rows = section.vocab_size if self.cfg.task == "clip" else section.text_vocab_size
        if tokens > rows:  # a copied tokenizer (fine-tuning) may not fit the model
            raise ValueError(f"{path} has {tokens} tokens, more than the {rows} rows of the model's token embedding "
                             "(model.text_vocab_size, clip.vocab_size)")

    def _load_data(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training images [N, C, H, W] and their conditioning: {"labels": [N]} or {"tokens", "mask": [N, L]}."""
        images, targets = load_dataset(self.cfg.data, "train")
        if isinstance(targets, torch.Tensor):
            cond = {"labels": targets}
        else:  # captions, tokenized once with the model's tokenizer
            m = self.cfg.clip if self.cfg.task == "clip" else self.cfg.model
            tokenizer = config_tokenizer(m)
            tokens, mask = tokenizer.padded_tokens_and_mask(targets)
            cond = {"tokens": tokens, "mask": mask}
            if self.cfg.task == "clip" and self.cfg.clip.hard_negatives:
                cond.update(hard_negative_tokens(targets, self.cfg.clip.hard_negatives, tokenizer, self.cfg.train.seed))
        if self.cfg.task == "diffusion" and self.cfg.model.super_res:
            # The upsampler's conditioning: the exact area-average of each target (for ShapesWorld, its own
            # lower-resolution render), computed once; batch() crops and noise-augments it.
            cond["low_res"] = area_downsample(images, low_res_size(self.cfg))
        return images.to(self.device), {k: v.to(self.device) for k, v in cond.items()}

    def _parallelize(self) -> nn.Module:
        """Activation checkpointing, then DDP or FSDP under torchrun. Returns the module whose forward to call."""
        if self.cfg.train.activation_checkpointing:
            enable_activation_checkpointing(self.model)  # not the EMA: it never runs backward
        if not self.distributed:
            return self.model  # one process: nothing to replicate or shard
        if self.cfg.train.parallel == "fsdp":
            # bf16: all-gather and compute in bf16 (half the traffic); master weights and optimizer stay fp32.
            shard(self.model, self.device, torch.bfloat16 if self.precision == "bf16" else None)
            shard(self.ema, self.device)  # the EMA is sharded like the weights it follows: lerp_ works shard by shard
            return self.model
        return data_parallel(self.model, self.device)

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
        """This rank's slice of step's global batch: x_start, t, noise, model_kwargs (conditioning.training_batch)."""
        if self.stream:
            return self.stream.batch(step, self.diffusion)
        return training_batch(self.cfg, self.images, self.cond, self.diffusion, step, self.rank, self.world)

    def loss_terms(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, kwargs: dict) -> dict:
        """Per-example terms [N] with a 'loss' among them, for the config's task."""
        if self.cfg.task == "clip":
            negatives = {k: kwargs[k] for k in ("negative_tokens", "negative_mask") if k in kwargs}
            if not self.cfg.clip.noised:  # an ordinary CLIP: clean images only
                return clip_loss_terms(self.ddp, x_start, torch.zeros_like(t), kwargs["tokens"], kwargs["mask"],
                                       **negatives)
            return clip_loss_terms(self.ddp, self.diffusion.q_sample(x_start, t, noise), t,
                                   kwargs["tokens"], kwargs["mask"], **negatives)
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
        micro_batches = self.micro_batches(x_start, t, noise, kwargs)
        stats, names = None, None
        self.opt.zero_grad(set_to_none=True)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((self.cfg.train.seed * 7919 + step * 104_729 + self.rank) % (2**63))  # dropout masks
            for i, (share, micro) in enumerate(micro_batches):
                # DDP all-reduces the summed gradients once, after the last micro-batch's backward.
                with gradient_sync(self.ddp, sync=i == len(micro_batches) - 1):
                    with autocast:
                        terms = self.loss_terms(*micro)
                    names = names or ["loss"] + sorted(k for k in terms if k != "loss")
                    micro_stats = torch.stack([terms[k].mean().detach().float() for k in names])
                    if self.distributed:
                        dist.all_reduce(micro_stats)  # every rank sees the same numbers, so all stop together
                        micro_stats /= self.world
                    if not torch.isfinite(micro_stats).all():
                        raise self._diverged(f"loss became {micro_stats[0].item()} at step {step}; stopped before "
                                             "updating the weights.")
                    # Each micro-batch adds its share of the mean over this rank's slice: the summed gradient is
                    # the one a single backward over the whole slice gives.
                    self.scaler.scale(terms["loss"].mean() * share).backward()
                stats = micro_stats if stats is None else stats + micro_stats
        stats /= len(micro_batches)  # equal micro-batches: the mean of their means is the batch mean
        self.scaler.unscale_(self.opt)
        # grad_clip 0 is no clipping: an infinite bound makes clip_grad_norm_ scale by exactly 1 and still
        # return the norm. A DTensor under FSDP (each rank holds part of the gradient); full_tensor makes it one number.
        max_norm = self.cfg.train.grad_clip or float("inf")
        grad_norm = full_tensor(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        # A finite loss can still have a NaN gradient (e.g. sqrt at 0). Under fp16 an infinite gradient is the
        # loss scaler's business: it skips the update and lowers the scale.
        if not self.scaler.is_enabled() and not torch.isfinite(grad_norm):
            raise self._diverged(f"gradient norm became {grad_norm.item()} at step {step}; "
                                 "stopped before updating the weights.")
        self.scaler.step(self.opt)
        self.scaler.update()
        # Finite gradients can still give non-finite weights (a NaN clip bound, an overflowing update): check the
        # result itself before the EMA follows it. The update is lost, never saved.
        if not self._agree(not non_finite(dict(self.model.named_parameters()))):
            raise self._diverged(f"the weights became non-finite in the update of step {step} (gradient norm "
                                 f"{grad_norm.item()}); they were not saved.")
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.model.parameters()):
                p_ema.lerp_(p, 1.0 - self.cfg.train.ema_rate)
        self.step += 1
        return {"step": self.step, **{k: round(v, 6) for k, v in zip(names, stats.tolist())},
                "lr": self.lr_at(step), "grad_norm": round(float(grad_norm), 4)}

    def micro_batches(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                      kwargs: dict) -> list[tuple[float, tuple]]:
        """Split this rank's slice [n, ...] into train.grad_accum_steps consecutive micro-batches.

        Returns [(share, (x_start, t, noise, kwargs))]: share = micro-batch size / n, the weight of its mean
        loss. Per-example kwargs (first dim n) are split with the images; anything else is passed whole.
        """
        n, k = len(x_start), self.cfg.train.grad_accum_steps
        if k == 1:
            return [(1.0, (x_start, t, noise, kwargs))]
        size = n // k  # the Trainer checked that batch_size divides into world * k equal parts
        take = lambda v, sl: v[sl] if torch.is_tensor(v) and v.ndim and len(v) == n else v
        parts = []
        for start in range(0, n, size):
            sl = slice(start, start + size)
            parts.append((size / n, (x_start[sl], t[sl], noise[sl], {key: take(v, sl) for key, v in kwargs.items()})))
        return parts

    def _diverged(self, what: str) -> TrainingDiverged:
        """The error for a non-finite loss, gradient or update: `what` happened, and where training can restart."""
        if self.saved_step is None:
            where = (f"Nothing to resume from: no checkpoint has been written to {self.out_dir} yet (the first is due "
                     f"at step {self.cfg.train.ckpt_every}).")
        else:
            where = (f"The last good checkpoint ({self.out_dir / CHECKPOINT}, step {self.saved_step}) is intact and "
                     "finite.")
        return TrainingDiverged(f"{what} {where} Try a lower train.lr, a smaller train.grad_clip, or precision fp32.")

    def _agree(self, ok: bool) -> bool:
        """True when `ok` holds on every rank (a collective under torchrun: every rank must call), so that all
        ranks stop together and none waits forever in the next all-reduce."""
        if not self.distributed:
            return ok
        flag = torch.tensor(float(ok), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def run(self, max_steps: int | None = None, time_budget_s: float | None = None) -> dict:
        """Train until max_steps (default train.max_steps); checkpoint every train.ckpt_every and at the end.

        max_steps may be raised beyond the config's to continue a run, never set below the step already reached.
        time_budget_s: also stop (with a checkpoint) after the first step that ends this many seconds after the
        call; a later run(resume) continues from there. The result's "stopped" says which limit ended it.
        """
        if time_budget_s is not None:
            check_finite_range("time_budget_s", time_budget_s, 0, lo_open=True)
        source = "train.max_steps" if max_steps is None else "max_steps"
        max_steps = self.cfg.train.max_steps if max_steps is None else max_steps
        if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral):
            raise ValueError(f"max_steps must be an integer, got {max_steps!r}")
        if max_steps < self.step:
            reached = (f"where the run resumed from {self.resumed_from}" if self.resumed_from
                       else "which this run has already reached")
            raise ValueError(f"{source} {max_steps} is below step {self.step}, {reached}: a run only continues "
                             f"forward; pass max_steps >= {self.step}, or train a shorter run in a new output folder")
        tcfg = self.cfg.train
        start_step, start, wall_before = self.step, time.perf_counter(), self.wall_time_s
        bar = tqdm(total=max_steps, initial=self.step, disable=not self.progress or self.rank != 0, desc="train")
        last = {}
        out_of_time = False
        while self.step < max_steps and not out_of_time:
            last = self.train_step()
            self.wall_time_s = wall_before + time.perf_counter() - start
            bar.update(1)
            if time_budget_s is not None:  # every rank stops at the same step
                out_of_time = not self._agree(time.perf_counter() - start < time_budget_s)
            if self.step % tcfg.log_every == 0 or self.step == max_steps or out_of_time:
                elapsed = time.perf_counter() - start
                last["images_per_s"] = round((self.step - start_step) * tcfg.batch_size / max(elapsed, 1e-9), 1)
                last["wall_time_s"] = round(self.wall_time_s, 1)
                if self.stream and (skipped := self.stream.skipped(self.distributed)):
                    last["data_skipped"] = skipped
                bar.set_postfix(loss=f"{last['loss']:.4f}")
                self._log(last)
            if self.step % tcfg.ckpt_every == 0 or self.step == max_steps or out_of_time:
                self.save()
        bar.close()
        wall = time.perf_counter() - start
        return {**last, "steps_run": self.step - start_step, "run_time_s": round(wall, 1),
                "stopped": "time budget" if out_of_time and self.step < max_steps else "max_steps"}

    # -- checkpoints -------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """model/, ema/ and optim/<parameter index>/ tensors, unsharded. Under FSDP every rank must call it
        (the shards are gathered) and only rank 0 receives the tensors (the others get {})."""
        tensors = {f"model/{k}": v for k, v in full_state_dict(self.model).items()}
        tensors.update({f"ema/{k}": v for k, v in full_state_dict(self.ema).items()})
        for i, state in full_optimizer_state(self.model, self.opt).items():
            tensors.update({f"optim/{i}/{k}": torch.as_tensor(v) for k, v in state.items()})
        return tensors

    def save(self) -> None:
        """Write the training state (with its sha256) over the checkpoint, atomically; refuses a non-finite one."""
        tensors = self.state_tensors()  # on every rank: a collective under FSDP
        data_state = self.stream.state(self.distributed) if self.stream else {}  # a collective too
        path = self.out_dir / CHECKPOINT
        bad = non_finite(tensors)  # under FSDP rank 0 holds every tensor, the others none
        if not self._agree(not bad):  # the old file stays: it is the last good state
            found = f"{len(bad)} of {len(tensors)} tensors are not finite (e.g. {', '.join(bad[:3])})" if bad else \
                "rank 0 found non-finite tensors"
            raise TrainingDiverged(f"refusing to write {path} at step {self.step}: {found}. The checkpoint on disk "
                                   f"(step {self.saved_step}) is kept.")
        if self.rank == 0:
            meta = {"step": self.step, "config": self.cfg.to_dict(), "format": "glide-minimal-train/1",
                    "wall_time_s": self.wall_time_s, "data_state": data_state,
                    "grad_scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}
            save_tensors(path, tensors, meta, checksum=True)
        if self.distributed:
            dist.barrier()
        self.saved_step = self.step

    def load(self, path: Path) -> None:
        """Resume from a training checkpoint: verified (sha256, finite) and of the same recipe as self.cfg."""
        sharded = is_sharded(self.model)
        # Under FSDP only rank 0 reads (and verifies) the tensors and broadcasts them; every rank reads the metadata.
        tensors, meta, error = {}, {}, None
        try:
            if sharded and self.rank:
                meta = load_metadata(path)
            else:
                tensors, meta = load_tensors(path, require_checksum=True)
        except CheckpointError as e:
            error = e
        if not self._agree(error is None):  # every rank raises, none waits for rank 0's broadcast
            raise error or CheckpointError(f"{path} could not be read on rank 0 (see its error)")
        if meta.get("format") != "glide-minimal-train/1":
            raise CheckpointError(f"{path} is not a glide-minimal training checkpoint (format {meta.get('format')!r})")
        differ = recipe_differences(meta.get("config", {}), self.cfg)
        if differ:
            raise CheckpointError(f"{path} was trained with a different recipe, so resuming would not continue the "
                                  f"same run: {'; '.join(differ)}. Resume with the config in "
                                  f"{path.parent / 'config.json'} (train.max_steps may be raised), or train into a new "
                                  "output folder")
        bad = non_finite(tensors)  # under FSDP only rank 0 has the tensors
        if not self._agree(not bad):
            found = f"{len(bad)} non-finite tensors (e.g. {', '.join(bad[:3])})" if bad else "non-finite tensors"
            raise CheckpointError(f"{path} holds {found}: it is no state to resume from; train into a new output "
                                  "folder")
        group = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        per_param: dict[int, dict] = {}
        for key, value in group("optim/").items():
            index, name = key.split("/")
            # (sharded: left on the CPU; each rank keeps only its shard, so no GPU holds the full state)
            per_param.setdefault(int(index), {})[name] = (value.to(self.device) if name != "step" and not sharded
                                                          else value)
        if sharded:
            load_sharded(self.model, self.ema, self.opt, group("model/"), group("ema/"), per_param)
        else:
            load_state_dict_into(self.model, group("model/"), str(path))
            load_state_dict_into(self.ema, group("ema/"), str(path))
            opt_state = self.opt.state_dict()
            opt_state["state"] = per_param
            self.opt.load_state_dict(opt_state)
        self.step = self.saved_step = int(meta["step"])
        self.wall_time_s = float(meta.get("wall_time_s", 0.0))
        if self.stream:
            self.stream.load_state(meta.get("data_state") or {}, path)
        if meta.get("grad_scaler") and self.scaler.is_enabled():  # fp16: resume the loss scale too
            self.scaler.load_state_dict(meta["grad_scaler"])

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
            atomic_write_bytes(log, "".join(r + "\n" for r in keep).encode())  # a kill here must not lose the log


def export_weights(train_dir: str | Path, out_path: str | Path, *, use_ema: bool = True,
                   dtype: torch.dtype = torch.float16, extra_meta: dict | None = None) -> Path:
    """Write the (EMA) weights of a training run as a shippable safetensors file + config JSON beside it."""
    tensors, meta = load_tensors(Path(train_dir) / CHECKPOINT)
    prefix = "ema/" if use_ema else "model/"
    weights = {k[len(prefix):]: v.to(dtype) if v.is_floating_point() else v
               for k, v in tensors.items() if k.startswith(prefix)}
    out_path = Path(out_path)
    config = with_tokenizer_beside(meta["config"], out_path.parent, out_path.stem)  # a learned BPE goes along
    save_tensors(out_path, weights, {"config": config, "step": meta["step"], **(extra_meta or {})})
    out_path.with_suffix(".json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out_path
