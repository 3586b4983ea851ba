"""Networks: they know nothing about diffusion."""
from __future__ import annotations

import contextlib

import torch

from .layers import AttentionBlock, ResBlock, timestep_embedding
from .classifier import NoisedClassifier
from .clip import NoisedCLIP
from .text import TextTransformer, WordTokenizer, get_tokenizer
from .unet import UNet


def build_model(cfg, device: str | torch.device | None = None) -> torch.nn.Module:
    """The network a Config (or a config name) describes. device="meta" builds it without memory (for counting)."""
    from ..config import Config, load_config

    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if cfg.task == "clip":
            return NoisedCLIP(cfg.clip)
        return NoisedClassifier(cfg.model) if cfg.task == "classifier" else UNet(cfg.model)


__all__ = ["AttentionBlock", "NoisedCLIP", "NoisedClassifier", "ResBlock", "TextTransformer", "UNet", "WordTokenizer",
           "build_model", "get_tokenizer", "timestep_embedding"]
