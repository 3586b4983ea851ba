"""Networks: they know nothing about diffusion."""
from __future__ import annotations

import contextlib

import torch

from ..config import Config, load_config, low_res_size
from .classifier import NoisedClassifier
from .clip import CaptionEncoder, NoisedCLIP, NoisedImageEncoder
from .layers import AttentionBlock, ResBlock, timestep_embedding
from .text import TextTransformer, WordTokenizer, get_tokenizer
from .unet import UNet


def build_model(cfg, device: str | torch.device | None = None) -> torch.nn.Module:
    """The network a Config (or a config name) describes. device="meta" builds it without memory (for counting)."""
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if cfg.task == "clip":
            # The release ships the two encoders as separate files; clip.part builds one of them alone.
            parts = {"both": NoisedCLIP, "image": NoisedImageEncoder, "text": CaptionEncoder}
            return parts[cfg.clip.part](cfg.clip)
        return NoisedClassifier(cfg.model) if cfg.task == "classifier" else UNet(cfg.model)


def example_inputs(cfg, batch: int = 1, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Zero inputs of the right shapes for cfg's diffusion model: (x_t, t, model_kwargs). For shape checks and
    memory estimates (device="meta")."""
    m = cfg.model
    x = torch.zeros(batch, m.in_channels, m.image_size, m.image_size, device=device)
    t = torch.zeros(batch, dtype=torch.long, device=device)
    kwargs = {}
    if m.num_classes:
        kwargs["labels"] = torch.zeros(batch, dtype=torch.long, device=device)
    if m.text_ctx:
        kwargs["tokens"] = torch.zeros(batch, m.text_ctx, dtype=torch.long, device=device)
        kwargs["mask"] = torch.zeros(batch, m.text_ctx, dtype=torch.bool, device=device)
    if m.super_res:  # data.low_res_size, by default 4x smaller (GLIDE's upsampling factor)
        low = low_res_size(cfg)
        kwargs["low_res"] = torch.zeros(batch, m.in_channels, low, low, device=device)
        if m.aug_level_embed:
            kwargs["aug_level"] = torch.zeros(batch, dtype=torch.long, device=device)
    if m.inpaint:
        kwargs["inpaint_image"] = torch.zeros_like(x)
        kwargs["inpaint_mask"] = torch.zeros(batch, 1, m.image_size, m.image_size, device=device)
    return x, t, kwargs


__all__ = ["AttentionBlock", "NoisedCLIP", "NoisedClassifier", "ResBlock", "TextTransformer", "UNet", "WordTokenizer",
           "build_model", "example_inputs", "get_tokenizer", "timestep_embedding"]
