"""The noised CLIP of GLIDE (Nichol et al. 2021, section 2.4), for CLIP guidance.

CLIP (Radford et al. 2021) learns an image encoder f and a caption encoder g whose embeddings have a
high dot product for matching pairs. To guide a diffusion sampler, the image encoder must judge the
*noised* x_t the sampler holds, so GLIDE trains it on noised images at every t, with t as an input:
here a learned embedding per timestep, used as the first token of a Vision Transformer (Dosovitskiy
et al. 2021) whose other tokens are image patches; that token's output is the image embedding. The
caption encoder is a causal transformer; the output at the last real token is the caption embedding.
The diffusion process is not in here: the trainer hands in x_t and t.

clip.input_norm: "clip" makes the image encoder standardise its input as the released noised CLIP
does (x_t -> (x_t + 1) * 127.5, minus CLIP's pixel mean, over its std, per channel), so converted
released weights see what they were trained on; "none" (the tutorial models) feeds x_t as it is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import CLIPConfig
from .text import ResidualAttentionBlock, tokenizer_vocab_size

# CLIP's per-channel pixel statistics on the 0..255 scale (Radford et al. 2021), used by input_norm "clip".
CLIP_PIXEL_MEAN = (122.77093945, 116.74601272, 104.09373519)
CLIP_PIXEL_STD = (68.50053285, 66.63215831, 70.32316309)


def clip_pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """x in [-1, 1] -> CLIP's standardised pixels: ((x + 1) * 127.5 - mean) / std per channel. [N, 3, H, W]."""
    mean = torch.tensor(CLIP_PIXEL_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_PIXEL_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return ((x + 1) * 127.5 - mean) / std


class Attention(nn.Module):
    """Multi-head self-attention with separate q, k, v projections. x [N, L, W] -> [N, L, W].

    k has no bias: adding the same vector to every key shifts each query's logits by a constant,
    which the softmax ignores (the released noised CLIP has no key bias either).
    """

    def __init__(self, width: int, heads: int, causal: bool = False):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width, bias=False)
        self.v_proj, self.out_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(p(x), "n l (heads d) -> n heads l d", heads=self.heads)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.out_proj(rearrange(out, "n heads l d -> n l (heads d)"))


class NoisedImageEncoder(nn.Module):
    """f(x_t, t): x_t [N, C, H, W] in model space, t [N] long (original timesteps) -> [N, embed_dim]."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.cfg = cfg
        patches = (cfg.image_size // cfg.patch_size) ** 2
        self.time_embedding = nn.Embedding(cfg.num_timesteps, cfg.width)
        self.patch_proj = nn.Conv2d(cfg.in_channels, cfg.width, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.positional_embedding = nn.Parameter(torch.randn(patches + 1, cfg.width) * 0.01)
        self.ln_pre = nn.LayerNorm(cfg.width)
        self.blocks = nn.Sequential(*[ResidualAttentionBlock(cfg.width, cfg.heads, attention=Attention)
                                      for _ in range(cfg.layers)])
        self.ln_post = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if tuple(x.shape[1:]) != (c.in_channels, c.image_size, c.image_size):
            raise ValueError(f"x has shape {tuple(x.shape)} but this CLIP image encoder takes "
                             f"[N, {c.in_channels}, {c.image_size}, {c.image_size}]")
        if c.input_norm == "clip":
            x = clip_pixel_norm(x)
        patches = rearrange(self.patch_proj(x), "n w h1 w1 -> n (h1 w1) w")
        tokens = torch.cat([self.time_embedding(t)[:, None].to(patches.dtype), patches], dim=1)
        h = self.blocks(self.ln_pre(tokens + self.positional_embedding.to(patches.dtype)))
        return self.proj(self.ln_post(h[:, 0]))


class CaptionEncoder(nn.Module):
    """g(caption): tokens [N, L] long, mask [N, L] bool -> [N, embed_dim] (output at the last real token)."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.context_length = cfg.text_ctx
        vocab = cfg.vocab_size or tokenizer_vocab_size(cfg.tokenizer, cfg.text_ctx)
        self.token_embedding = nn.Embedding(vocab, cfg.text_width)
        self.positional_embedding = nn.Parameter(torch.randn(cfg.text_ctx, cfg.text_width) * 0.01)
        self.blocks = nn.Sequential(*[ResidualAttentionBlock(cfg.text_width, cfg.text_heads, causal=True,
                                                             attention=Attention)
                                      for _ in range(cfg.text_layers)])
        self.ln_final = nn.LayerNorm(cfg.text_width)
        self.proj = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"tokens must be [N, {self.context_length}] (the CLIP text context), "
                             f"got {tuple(tokens.shape)}")
        h = self.blocks(self.token_embedding(tokens) + self.positional_embedding)
        # Causal attention: the last real token is the first position that has read the whole caption.
        last = (mask.long().sum(-1) - 1).clamp(min=0)
        return self.proj(self.ln_final(h[torch.arange(len(h), device=h.device), last]))


class NoisedCLIP(nn.Module):
    """Both encoders and the learned temperature. forward -> (image emb, caption emb) unit vectors, logit scale."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        self.cfg = cfg
        self.image_encoder, self.text_encoder = NoisedImageEncoder(cfg), CaptionEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(2.6593))  # log(1 / 0.07), CLIP's initial temperature

    def embed_image(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_encoder(x_t, t).float(), dim=-1)

    def embed_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(tokens, mask).float(), dim=-1)

    def similarity_scale(self) -> torch.Tensor:
        """exp(logit_scale), capped at 100 as in CLIP: the factor on the cosine similarity in the contrastive
        logits and in CLIP guidance (the released CLIP's is exactly 100)."""
        return self.logit_scale.exp().clamp(max=100)

    def forward(self, x_t, t, tokens, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.embed_image(x_t, t), self.embed_text(tokens, mask), self.similarity_scale()


def clip_loss_terms(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
                    mask: torch.Tensor, negative_tokens: torch.Tensor | None = None,
                    negative_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """CLIP's symmetric contrastive loss, per example [N]; plus retrieval accuracy.

    ShapesWorld repeats captions within a batch, so every pair with an identical caption counts as a
    match (the target spreads over them) instead of being pushed apart as a false negative.
    negative_tokens, negative_mask [N, k, L]: hard negatives (config clip.hard_negatives), captions that are
    wrong for their image by one attribute; all N * k join the captions every image is scored against, as
    extra wrong answers (NegCLIP). The caption-to-image direction is unchanged.
    """
    n = len(tokens)
    if negative_tokens is not None:  # one forward for all captions (DDP syncs what the forward used)
        tokens_in = torch.cat([tokens, negative_tokens.flatten(0, 1)])
        mask_in = torch.cat([mask, negative_mask.flatten(0, 1)])
    else:
        tokens_in, mask_in = tokens, mask
    image_emb, text_emb, scale = model(x_t, t, tokens_in, mask_in)
    logits_i = scale * image_emb @ text_emb.T  # [N images, N captions + N * k hard negatives]
    logits = logits_i[:, :n]
    same = (tokens[:, None] == tokens[None]).all(-1).float()
    target = same / same.sum(-1, keepdim=True)
    loss_t = -(target * logits.T.log_softmax(-1)).sum(-1)
    target_i = torch.cat([target, target.new_zeros(n, logits_i.shape[1] - n)], dim=1)
    loss_i = -(target_i * logits_i.log_softmax(-1)).sum(-1)
    correct = same.gather(1, logits.argmax(-1, keepdim=True))[:, 0]
    return {"loss": (loss_i + loss_t) / 2, "accuracy": correct}
