"""Training memory per GPU: weights, gradients, AdamW moments, EMA and activations, for DDP and FSDP,
with and without activation checkpointing (`glide-minimal info --config NAME --gpus N`).

Everything is measured on the meta device (shapes only: no memory, no compute), so the 3.5 B paper
model is sized in a second on a laptop. Activations are what autograd keeps for backward during one
forward pass: the tensors its saved-tensor hooks see, parameters excluded.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import Config
from .models import build_model, example_inputs
from .parallel import blocks, enable_activation_checkpointing

GIB = 2**30
CARD_BYTES = 80 * GIB  # an "80 GB" A100 / H100 holds 80 GiB
USABLE = 0.9  # the rest: CUDA context, allocator fragmentation, communication buffers
# Bytes per parameter, all fp32 (autocast computes in bf16 but keeps fp32 master weights and gradients).
WEIGHT, GRAD, ADAMW, EMA = 4, 4, 8, 4  # AdamW: two moments (exp_avg, exp_avg_sq)


@dataclass
class Footprint:
    """Per-model numbers that do not depend on the GPU count."""

    parameters: int
    activation_bytes: float  # per image, kept for backward without checkpointing (fp32)
    checkpointed_bytes: float  # per image with activation checkpointing: block inputs + one block's recompute
    root_parameters: int  # parameters outside every block (FSDP's root unit, gathered for the whole step)
    largest_block: int  # parameters of the largest block (one FSDP unit)


@dataclass
class PerGPU:
    """Bytes on each GPU for one strategy."""

    strategy: str
    weights: float
    grads: float
    adamw: float
    ema: float
    activations: float
    copies: float  # DDP: autocast's bf16 weight casts kept for backward; FSDP: the all-gathered units in flight

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.adamw + self.ema + self.activations + self.copies

    def fits(self, card_bytes: float = CARD_BYTES) -> bool:
        return self.total <= USABLE * card_bytes


def _forward_inputs(cfg: Config, batch: int) -> tuple[tuple, dict]:
    """Meta inputs for cfg's model: (args, kwargs)."""
    if cfg.task == "clip":
        c = cfg.clip
        x = torch.zeros(batch, c.in_channels, c.image_size, c.image_size, device="meta")
        t = torch.zeros(batch, dtype=torch.long, device="meta")
        tokens = torch.zeros(batch, c.text_ctx, dtype=torch.long, device="meta")
        mask = torch.ones(batch, c.text_ctx, dtype=torch.bool, device="meta")
        return {"both": ((x, t, tokens, mask), {}), "image": ((x, t), {}), "text": ((tokens, mask), {})}[c.part]
    x, t, kwargs = example_inputs(cfg, batch, device="meta")
    return ((x, t), {}) if cfg.task == "classifier" else ((x, t), kwargs)


def _saved_bytes(model: nn.Module, args: tuple, kwargs: dict, checkpointed: bool = False) -> tuple[float, list[float]]:
    """(bytes kept for backward during one forward, [bytes kept inside each block]).

    With checkpointed blocks, autograd keeps nothing inside them (checkpointing swaps in its own hooks)
    and each block's tensor inputs are kept instead: they are counted once each.
    """
    params = {id(p) for p in model.parameters()}
    seen: dict[int, torch.Tensor] = {}  # kept alive so that ids stay unique
    per_block: list[float] = []
    inside = [False]

    def keep(t: torch.Tensor) -> None:
        if id(t) not in params and id(t) not in seen:
            seen[id(t)] = t
            if inside[0]:
                per_block[-1] += t.numel() * t.element_size()

    def pack(t: torch.Tensor) -> torch.Tensor:
        keep(t)
        return t

    def enter(_module, inputs):
        if checkpointed:  # a checkpointed block keeps its inputs
            for x in inputs:
                if torch.is_tensor(x):
                    keep(x)
        inside[0] = True
        per_block.append(0.0)

    def leave(_module, _inputs, _out):
        inside[0] = False

    hooks = [h for b in blocks(model) for h in (b.register_forward_pre_hook(enter), b.register_forward_hook(leave))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return sum(t.numel() * t.element_size() for t in seen.values()), per_block


def footprint(cfg: Config) -> Footprint:
    """Parameters, activation bytes per image (fp32) with and without checkpointing, FSDP unit sizes."""
    model = build_model(cfg, device="meta")
    count = lambda m: sum(p.numel() for p in m.parameters())
    block_params = [count(b) for b in blocks(model)]
    args, kwargs = _forward_inputs(cfg, 1)
    plain, per_block = _saved_bytes(model, args, kwargs)
    enable_activation_checkpointing(model)
    kept, _ = _saved_bytes(model, args, kwargs, checkpointed=True)  # block inputs + what runs outside blocks
    # During backward one block at a time is recomputed: its internals come back, briefly.
    return Footprint(parameters=count(model), activation_bytes=plain,
                     checkpointed_bytes=kept + max(per_block, default=0.0),
                     root_parameters=count(model) - sum(block_params), largest_block=max(block_params, default=0))


def forward_flops(cfg: Config, batch: int = 1) -> int:
    """Floating-point operations of one forward pass at this batch (a multiply-add counts 2), counted on the
    meta device by torch's FlopCounterMode: convolutions, matmuls and attention; elementwise ops are left out.
    One sampling step is one forward (two with classifier-free guidance); one training step about three."""
    model = build_model(cfg, device="meta")
    args, kwargs = _forward_inputs(cfg, batch)
    with FlopCounterMode(display=False) as counter:
        model(*args, **kwargs)
    return counter.get_total_flops()


def micro_batch(cfg: Config, gpus: int) -> float:
    """Images each GPU runs through one forward: the global batch / (GPUs x accumulation steps)."""
    return cfg.train.batch_size / (gpus * cfg.train.grad_accum_steps)


def activation_scale(cfg: Config) -> float:
    """Activation bytes relative to fp32: 0.5 under bf16/fp16 autocast (auto means bf16 on a GPU)."""
    return 1.0 if cfg.train.precision == "fp32" else 0.5


def per_gpu_memory(cfg: Config, gpus: int, fp: Footprint | None = None) -> list[PerGPU]:
    """Bytes per GPU for DDP and FSDP over `gpus` GPUs, each with and without activation checkpointing."""
    if not isinstance(gpus, int) or gpus < 1:
        raise ValueError(f"gpus must be a positive integer, got {gpus!r}")
    fp = fp or footprint(cfg)
    p, images, scale = fp.parameters, micro_batch(cfg, gpus), activation_scale(cfg)
    # DDP under bf16 autocast: every layer's weight is cast to bf16 once per forward and the cast is kept
    # for backward (2 bytes per parameter). FSDP all-gathers a unit's weights (already bf16 under its bf16
    # policy, else fp32) and holds its unsharded gradients until the reduce-scatter: the root unit all
    # step, plus the running and the prefetched block.
    unit_bytes = 2 if scale < 1 else 4
    casts = 2 * p if scale < 1 else 0.0
    gathered = (fp.root_parameters + 2 * fp.largest_block) * 2 * unit_bytes
    rows = []
    for name, shards, extra in (("DDP", 1, casts), (f"FSDP (1/{gpus})", gpus, gathered)):
        for ckpt in (False, True):
            act = (fp.checkpointed_bytes if ckpt else fp.activation_bytes) * scale * images
            rows.append(PerGPU(name + (" + checkpointing" if ckpt else ""), WEIGHT * p / shards, GRAD * p / shards,
                               ADAMW * p / shards, EMA * p / shards, act, extra))
    return rows


ASSUMPTIONS = """\
Assumptions (estimates; measure on the real card before a long run):
- fp32 master weights, fp32 gradients, AdamW's two fp32 moments and an fp32 EMA:
  4 + 4 + 8 + 4 bytes per parameter. DDP keeps all of it on every GPU; FSDP
  (fully_shard, ZeRO-3) keeps 1/N of each.
- activations: what autograd keeps for one forward at the per-GPU micro-batch
  (global batch / (GPUs x train.grad_accum_steps)), measured on the meta device,
  halved for bf16 autocast. Attention runs in SDPA kernels that never store the
  attention matrix. Checkpointing keeps each block's input and recomputes one
  block at a time in backward (about one extra forward of compute).
- copies: DDP under bf16 autocast keeps a bf16 cast of every weight for backward
  (2 bytes per parameter); FSDP holds the unsharded weights and gradients of the
  root unit and of two blocks (the one running and the one prefetched).
- a card fits when the total is at most 90 % of 80 GiB (the rest: CUDA context,
  fragmentation, NCCL). Not counted: temporary buffers of single kernels and the
  data batch itself."""


def format_report(cfg: Config, gpus: int, card_bytes: float = CARD_BYTES) -> str:
    """The text `glide-minimal info --config NAME --gpus N` prints."""
    fp = footprint(cfg)
    rows = per_gpu_memory(cfg, gpus, fp)
    gib = lambda b: f"{b / GIB:.2f}"
    precision = "fp32" if activation_scale(cfg) == 1 else "bf16"
    # at most 88 columns wide, like every line the book prints: long values wrap under their value
    wrap = lambda label, text: textwrap.fill(text, 88, initial_indent=f"{label:<12}",
                                             subsequent_indent=" " * 12)
    name = max(28, 1 + max(len(r.strategy) for r in rows))  # 88 columns up to 99 GPUs
    lines = [
        wrap("config", f"{cfg.name}: {cfg.description}"),
        wrap("parameters", f"{fp.parameters:,}"),
        wrap("compute", f"{forward_flops(cfg) / 1e9:,.2f} GFLOP per image per forward "
                        "(a training step: about 3x)"),
        wrap("batch", f"global {cfg.train.batch_size} over {gpus} GPU{'s' * (gpus > 1)} x "
                      f"{cfg.train.grad_accum_steps} accumulation step(s): {micro_batch(cfg, gpus):g} "
                      f"images per GPU per forward ({precision} activations)"),
        wrap("config says", f"train.parallel {cfg.train.parallel}, train.activation_checkpointing "
                            f"{str(cfg.train.activation_checkpointing).lower()}"),
        "",
        f"{'per GPU (GiB)':<{name}}{'weights':>7}{'grads':>8}{'AdamW':>8}{'EMA':>8}{'activ.':>8}"
        f"{'copies':>8}{'total':>8} fits",
    ]
    for r in rows:
        lines.append(f"{r.strategy:<{name}}{gib(r.weights):>7}{gib(r.grads):>8}{gib(r.adamw):>8}"
                     f"{gib(r.ema):>8}{gib(r.activations):>8}{gib(r.copies):>8}{gib(r.total):>8}"
                     f" {'yes' if r.fits(card_bytes) else 'no':>4}")
    lines.append(f"(fits: the total is within {USABLE * 100:g} % of one {card_bytes / GIB:g} GiB card)")
    return "\n".join(lines + ["", ASSUMPTIONS])
