"""Building blocks of the ADM U-Net (Dhariwal & Nichol 2021), as GLIDE uses them.

Timestep embedding (Vaswani et al. 2017's sinusoids, cos then sin as in the released GLIDE), residual
blocks with scale-shift norm (FiLM, Perez et al. 2018), self-attention whose keys and values can be
extended with context tokens (GLIDE's text), and 2x down/up sampling.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps [N] -> [N, dim], [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (stable under bf16/fp16 autocast)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The affine parameters are cast too: FSDP's bf16 parameter policy hands them over in bf16.
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def normalization(channels: int, groups: int = 32) -> nn.Module:
    """GroupNorm with `groups` groups (ADM: 32), or the largest count dividing `channels` (e.g. 16 for 48 and 32)."""
    return GroupNorm32(math.gcd(groups, channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer so the block it ends starts as the identity (residual) or as zero output."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv."""

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour then a 3x3 conv."""

    def __init__(self, channels: int, out_channels: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the timestep (and condition) embedding injected in between.

    With use_scale_shift_norm the embedding gives a scale and shift applied after the second norm:
    h = norm(h) * (1 + scale) + shift (ADM's "AdaGN"). up/down resample inside the block (BigGAN-style).
    x: [N, C, H, W], emb: [N, E] -> [N, C_out, H', W'].
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float = 0.0, out_channels: int | None = None,
                 use_scale_shift_norm: bool = True, up: bool = False, down: bool = False, norm_groups: int = 32):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(normalization(channels, norm_groups), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd = self.x_upd = nn.Upsample(scale_factor=2, mode="nearest")
        elif down:
            self.h_upd = self.x_upd = nn.AvgPool2d(2)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels, norm_groups), nn.SiLU(), nn.Dropout(dropout),
                                        zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # Resample between the norm/activation and the conv so the conv runs at the new resolution.
            norm_act, conv = self.in_layers[:-1], self.in_layers[-1]
            h = conv(self.h_upd(norm_act(x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
        else:
            h = out_norm(h + emb_out)
        return self.skip_connection(x) + out_rest(h)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, with optional context tokens.

    GLIDE conditions on text by projecting the text transformer's tokens into each attention layer and
    prepending them to the keys and values, so one softmax runs over text tokens and pixels together.
    x: [N, C, H, W]; context: [N, C_ctx, L] or None -> [N, C, H, W].
    """

    def __init__(self, channels: int, num_head_channels: int = 64, context_channels: int | None = None,
                 norm_groups: int = 32):
        super().__init__()
        if channels % num_head_channels:
            raise ValueError(f"attention width {channels} is not divisible by num_head_channels {num_head_channels}")
        self.num_heads = channels // num_head_channels
        self.norm = normalization(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.encoder_kv = nn.Conv1d(context_channels, 2 * channels, 1) if context_channels else None
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))
        self.keep_attention = False  # set True to keep the softmax weights (for plots) in self.attention
        self.attention: torch.Tensor | None = None  # [N, heads, H*W queries, L_context + H*W keys]

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        seq = rearrange(x, "n c h w -> n c (h w)")
        qkv = self.qkv(self.norm(seq))
        # Channels are grouped per head as [q | k | v] (the released GLIDE's layout).
        q, k, v = rearrange(qkv, "n (heads three d) l -> three n heads l d", heads=self.num_heads, three=3)
        if context is not None:
            if self.encoder_kv is None:
                raise ValueError("this attention block was built without context_channels but got a context")
            ekv = self.encoder_kv(context)
            ek, ev = rearrange(ekv, "n (heads two d) l -> two n heads l d", heads=self.num_heads, two=2)
            k, v = torch.cat([ek, k], dim=2), torch.cat([ev, v], dim=2)
        if self.keep_attention:  # the same attention, written out so the weights can be kept
            self.attention = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
            out = self.attention @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "n heads l d -> n (heads d) l")
        return x + rearrange(self.proj_out(out), "n c (h w) -> n c h w", h=h, w=w)
