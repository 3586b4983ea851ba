"""Fast sampling settings for the GLIDE cascade, and the cascade itself (base 64 px with classifier-free
guidance, then the 256 px upsampler), so that `glide-minimal bench released` can time the official recipe
and ours side by side on the same weights.

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

from .config import Config
from .diffusion import GaussianDiffusion, ddim_sample_loop, p_sample_loop
from .diffusion.guidance import classifier_free_model_fn

UPSAMPLE_TEMPERATURE = 0.997  # the released upsampler's sampling temperature


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
    upsample_steps: str = "fast27"
    upsample_sampler: str = "ddim"  # the release samples its upsampler with DDIM, also over fast27

    @property
    def precision(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    @property
    def base_sampler(self) -> str:
        return "ddim" if self.base_steps.startswith("ddim") else "ancestral"


def official_settings(base_steps: str = "100", upsample_steps: str = "fast27") -> Settings:
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


def caption_inputs(cfg: Config, batch: int, device: torch.device, seed: int = 0) -> tuple[dict, dict]:
    """Random 8-token captions (random weights need no real words) and the empty caption:
    ({"tokens", "mask"} conditional, the same unconditional), tokens [N, text_ctx] long, mask [N, text_ctx] bool."""
    from .models.text import tokenizer_vocab_size

    m = cfg.model
    vocab = m.text_vocab_size or tokenizer_vocab_size(m.tokenizer, m.text_ctx)
    g = torch.Generator().manual_seed(seed)
    length = min(8, m.text_ctx)
    tokens = torch.zeros(batch, m.text_ctx, dtype=torch.long)
    tokens[:, :length] = torch.randint(1, vocab, (batch, length), generator=g)
    mask = torch.zeros(batch, m.text_ctx, dtype=torch.bool)
    mask[:, :length] = True
    cond = {"tokens": tokens.to(device), "mask": mask.to(device)}
    return cond, {"tokens": torch.zeros_like(cond["tokens"]), "mask": torch.zeros_like(cond["mask"])}


@torch.no_grad()
def cascade(base_fn: Callable, upsample_fn: Callable, base_cfg: Config, upsample_cfg: Config, settings: Settings,
            cond: dict, uncond: dict, guidance_scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    """Text -> 64 px with classifier-free guidance -> 256 px. Returns [N, 3, 256, 256] in [-1, 1]."""
    n, device = len(cond["tokens"]), cond["tokens"].device
    g = torch.Generator(device=device).manual_seed(seed)
    guided = classifier_free_model_fn(base_fn, guidance_scale, uncond, base_cfg.model.out_channels)
    base_diffusion = GaussianDiffusion.from_config(base_cfg.diffusion, settings.base_steps)
    loop = ddim_sample_loop if settings.base_sampler == "ddim" else p_sample_loop
    size = base_cfg.model.image_size
    low_res = loop(base_diffusion, guided, (n, 3, size, size), model_kwargs=cond, generator=g, device=device)
    up_diffusion = GaussianDiffusion.from_config(upsample_cfg.diffusion, settings.upsample_steps)
    size = upsample_cfg.model.image_size
    shape, kwargs = (n, 3, size, size), {**cond, "low_res": low_res}
    # The temperature scales x_T only, as the release (and UpsamplePipeline) does.
    noise = torch.randn(shape, generator=g, device=device) * UPSAMPLE_TEMPERATURE
    loop = ddim_sample_loop if settings.upsample_sampler == "ddim" else p_sample_loop
    return loop(up_diffusion, upsample_fn, shape, noise=noise, model_kwargs=kwargs, generator=g, device=device)
