"""The noised classifier of Dhariwal & Nichol (2021): p_phi(y | x_t, t) for classifier guidance.

It is the U-Net's encoder half (same ResBlocks, timestep embedding and attention) followed by
attention pooling: a query made from the mean feature attends over all positions (as in CLIP's
image encoder, Radford et al. 2021) and a linear layer gives the class logits. Trained on x_t at
every t, so its gradient grad_x log p(y | x_t) is meaningful along the whole sampling path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import UNetConfig
from .layers import AttentionBlock, ResBlock, normalization, timestep_embedding
from .unet import EmbedSequential, encoder_blocks


class AttentionPool2d(nn.Module):
    """[N, C, H, W] -> [N, out]: the mean token (plus positional embeddings) attends over all positions."""

    def __init__(self, size: int, channels: int, num_head_channels: int, out_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(channels, size * size + 1) / channels**0.5)
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.c_proj = nn.Conv1d(channels, out_dim, 1)
        self.num_heads = channels // num_head_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "n c h w -> n c (h w)")
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding.to(x.dtype)
        q, k, v = rearrange(self.qkv_proj(x), "n (heads three d) l -> three n heads l d", heads=self.num_heads, three=3)
        out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # only the pooled (mean) token's query
        return self.c_proj(rearrange(out, "n heads l d -> n (heads d) l"))[:, :, 0]


class NoisedClassifier(nn.Module):
    """logits [N, num_classes] = f(x_t [N, C, H, W], t [N]); cfg.out_channels is the number of classes."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.model_channels
        emb_dim = 4 * ch
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        res = lambda c_in, c_out=None, **kw: ResBlock(c_in, emb_dim, cfg.dropout, c_out, cfg.use_scale_shift_norm,
                                                      norm_groups=cfg.norm_groups, **kw)
        attn = lambda c: AttentionBlock(c, cfg.num_head_channels, norm_groups=cfg.norm_groups)
        self.input_blocks, channels = encoder_blocks(cfg, res, attn)
        ch, size = channels[-1], cfg.image_size // 2 ** (len(cfg.channel_mult) - 1)
        self.middle_block = EmbedSequential([res(ch), attn(ch), res(ch)])
        self.out = nn.Sequential(normalization(ch, cfg.norm_groups), nn.SiLU(),
                                 AttentionPool2d(size, ch, cfg.num_head_channels, cfg.out_channels))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        expected = (self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"x has shape {tuple(x.shape)} but this classifier takes [N, {expected[0]}, "
                             f"{expected[1]}, {expected[2]}]")
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels))
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
        return self.out(self.middle_block(h, emb))
