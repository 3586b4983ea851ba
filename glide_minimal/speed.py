"""Sampling settings for the GLIDE cascade (base 64 px with classifier-free guidance, then the 256 px
upsampler): the release's recipe and ours, and `prepare`, which runs a network under them. The cascade itself
is TextPipeline(upsample=True) (pipelines/text.py); `pipe.optimize(settings)` applies a setting to a
pipeline, so `glide-minimal bench released` times the official recipe and ours on the same weights and code.

Official recipe (glide-text2im's text2im notebook): fp32, 100 ancestral base steps with classifier-free
guidance in one batched forward (the conditional and unconditional halves as one batch of 2N), then 27 DDIM
(eta 0) upsampler steps ("fast27") from a starting noise x_T scaled by the temperature 0.997 (only x_T: the
later steps of DDIM add no noise). Ours: the same models and guidance with bf16 autocast where
the hardware computes bf16 natively, channels_last memory layout (the layout fast convolution kernels
want), optionally torch.compile, 25 DDIM base steps and 10 DDIM upsampler steps (chapter 8 measures what
fewer steps cost in quality on the tutorial models). Attention is SDPA in both (it is our layer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# The released upsampler's sampling recipe (glide-text2im's text2im notebook): DDIM over the 27-step
# "fast27" respacing, from a starting noise x_T scaled by the temperature 0.997.
RELEASE_UPSAMPLE_STEPS = "fast27"
RELEASE_UPSAMPLE_SAMPLER = "ddim"
RELEASE_UPSAMPLE_TEMPERATURE = 0.997


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
    """How the cascade runs. base_steps, upsample_steps: respacing specs; "ddimN" samples with DDIM (eta 0),
    anything else ancestrally."""

    name: str
    dtype: torch.dtype | None = None  # autocast dtype; None: fp32
    channels_last: bool = False
    compile: bool = False
    base_steps: str = "100"
    upsample_steps: str = RELEASE_UPSAMPLE_STEPS
    upsample_sampler: str = RELEASE_UPSAMPLE_SAMPLER

    @property
    def precision(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    @property
    def base_sampler(self) -> str:
        return "ddim" if self.base_steps.startswith("ddim") else "ancestral"


def official_settings(base_steps: str = "100", upsample_steps: str = RELEASE_UPSAMPLE_STEPS) -> Settings:
    """glide-text2im's recipe: fp32, contiguous layout, ancestral base steps, DDIM over fast27 for the upsampler."""
    return Settings("official", base_steps=base_steps, upsample_steps=upsample_steps)


def fast_settings(device: torch.device, base_steps: str = "ddim25", upsample_steps: str = "ddim10",
                  compile: bool = False) -> Settings:
    """Ours: bf16 autocast where native, channels_last, DDIM base and upsampler steps, optionally torch.compile."""
    dtype = torch.bfloat16 if bf16_supported(device) else None
    return Settings("fast", dtype, channels_last=True, compile=compile, base_steps=base_steps,
                    upsample_steps=upsample_steps)


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
