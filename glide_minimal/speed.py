"""Sampling settings for the GLIDE cascade (base 64 px with classifier-free guidance, then the 256 px
upsampler): the release's recipe and ours, and `prepare`, which runs a network under them. The cascade itself
is TextPipeline(upsample=True) (pipelines/text.py); `pipe.optimize(settings)` applies a setting to a
pipeline, so `glide-minimal bench released` times the official recipe and ours on the same weights and code.

Official recipe (glide-text2im's text2im notebook): fp32, 100 ancestral base steps with classifier-free
guidance in one batched forward (the conditional and unconditional halves as one batch of 2N), then 27 DDIM
(eta 0) upsampler steps ("fast27") from a starting noise x_T scaled by the temperature 0.997 (only x_T: the
later steps of DDIM add no noise). Ours: the same models and guidance with bf16 autocast where
the hardware computes bf16 natively, channels_last memory layout (the layout fast convolution kernels
want), optionally torch.compile, and DPM-Solver++(2M) with few steps in both stages (FAST_*: chapter 8
measures what fewer steps cost in quality on the tutorial models). Attention is SDPA in both (our layer).
Precision and layout are bets on the device's kernels: `measure_fast_settings` times each candidate on the
models and batch at hand and keeps the fastest (`bench released` does).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch

from .checks import check_count

# The released upsampler's sampling recipe (glide-text2im's text2im notebook): DDIM over the 27-step
# "fast27" respacing, from a starting noise x_T scaled by the temperature 0.997.
RELEASE_UPSAMPLE_STEPS = "fast27"
RELEASE_UPSAMPLE_SAMPLER = "ddim"
RELEASE_UPSAMPLE_TEMPERATURE = 0.997
# Ours: the fewest steps per stage whose quality on the tutorial models stays within 2 % of the official
# recipe's, judged by the independent evaluators as each stage's chapter does: the base model by caption
# accuracy (chapter 4), the upsampler by its distance to the true render (chapter 6).
# book/08_scaling_up.ipynb measures the sweep and asserts that these are the settings it finds.
FAST_SAMPLER = "dpm++2m"
FAST_BASE_STEPS = "5"
FAST_UPSAMPLE_STEPS = "5"


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 is computed natively (CUDA with bf16, a CPU with AVX512-BF16 or AMX); elsewhere
    bf16 autocast is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(check() for check in checks if check is not None)
    return False


@dataclass
class Settings:
    """How the cascade runs: the network's precision, layout and compilation, and each stage's sampler and
    steps (a respacing spec: "100", "ddim25", "fast27", or a count for any sampler)."""

    name: str
    dtype: torch.dtype | None = None  # autocast dtype; None: fp32
    channels_last: bool = False
    compile: bool = False
    base_steps: str = "100"
    base_sampler: str = "ancestral"
    upsample_steps: str = RELEASE_UPSAMPLE_STEPS
    upsample_sampler: str = RELEASE_UPSAMPLE_SAMPLER

    @property
    def precision(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")


def official_settings(base_steps: str = "100", upsample_steps: str = RELEASE_UPSAMPLE_STEPS) -> Settings:
    """glide-text2im's recipe: fp32, contiguous layout, ancestral base steps, DDIM over fast27 for the upsampler."""
    return Settings("official", base_steps=base_steps, upsample_steps=upsample_steps)


def best_of(fn: Callable[[], Any], repeats: int = 1) -> float:
    """The fastest of `repeats` calls of fn, in seconds (waits for the GPU after each)."""
    times = []
    for _ in range(check_count("repeats", repeats)):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def fast_settings(device: torch.device, base_steps: str = FAST_BASE_STEPS, upsample_steps: str = FAST_UPSAMPLE_STEPS,
                  compile: bool = False, sampler: str = FAST_SAMPLER) -> Settings:
    """Ours: bf16 autocast where native, channels_last, DPM-Solver++(2M) at the fewest steps that keep the
    tutorial models' evaluator quality within 2 % of the official recipe's (FAST_*; chapter 8 measures and
    asserts it), optionally torch.compile."""
    dtype = torch.bfloat16 if bf16_supported(device) else None
    return Settings("fast", dtype, channels_last=True, compile=compile, base_steps=base_steps,
                    base_sampler=sampler, upsample_steps=upsample_steps, upsample_sampler=sampler)


def prepare(model: torch.nn.Module, settings: Settings) -> Callable[..., torch.Tensor]:
    """model -> model_fn(x_t, t, **kwargs) running under `settings`; returns float32 (the diffusion math
    stays fp32 whatever the network computes in). Converts the model's layout in place."""
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if settings.compile else model
    device_type = next(model.parameters()).device.type

    def model_fn(x_t: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        if settings.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        if settings.dtype is None:
            return net(x_t, t, **kwargs).float()
        with torch.autocast(device_type, dtype=settings.dtype):
            return net(x_t, t, **kwargs).float()

    return model_fn


def layout_label(dtype: torch.dtype | None, channels_last: bool) -> str:
    """"bf16 channels_last", "fp32 contiguous", ...: one candidate of measure_fast_settings."""
    return f"{Settings('', dtype).precision} {'channels_last' if channels_last else 'contiguous'}"


@torch.no_grad()
def measure_fast_settings(stages: list[tuple[torch.nn.Module, tuple, dict]], settings: Settings,
                          repeats: int = 3) -> tuple[Settings, dict[str, list[float]]]:
    """`settings` with the precision and memory layout that run these forwards fastest on this device, measured.

    Why measure: bf16 autocast and channels_last are each a bet on the hardware's kernels, and the bet can
    lose (on an H100 at batch 4 the released-size forwards ran slower in bf16 + channels_last than in fp32:
    0.64x and 0.68x); which wins depends on the device, the batch and the torch version.
    stages: (model, args, kwargs) for each network one sampling step runs, at the batch it runs (the cascade:
    the base at 2N with CFG, the upsampler at N; all on one device). Candidates: fp32 and, where bf16 is
    native, bf16 autocast, each contiguous and channels_last; each is timed per stage, best of `repeats`
    after a warm-up, and the one with the least total wins. Compilation is not part of the trial (settings'
    own `compile` is kept). Returns (settings, {label: [seconds per stage]}); the models are left contiguous.
    """
    device = next(stages[0][0].parameters()).device
    dtypes = [None, torch.bfloat16] if bf16_supported(device) else [None]
    candidates = {layout_label(d, c): (d, c) for d in dtypes for c in (False, True)}
    times: dict[str, list[float]] = {}
    for label, (dtype, channels_last) in candidates.items():
        trial = replace(settings, dtype=dtype, channels_last=channels_last, compile=False)
        times[label] = []
        for model, args, kwargs in stages:
            model.to(memory_format=torch.contiguous_format)
            fn = prepare(model, trial)
            fn(*args, **kwargs)  # warm-up: kernels are chosen and caches filled on the first call
            times[label].append(best_of(lambda: fn(*args, **kwargs), repeats))  # noqa: B023 (called right here)
    for model, _, _ in stages:
        model.to(memory_format=torch.contiguous_format)
    dtype, channels_last = candidates[min(times, key=lambda label: sum(times[label]))]
    return replace(settings, dtype=dtype, channels_last=channels_last), times
