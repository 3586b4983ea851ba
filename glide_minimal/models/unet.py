"""The ADM U-Net (Dhariwal & Nichol 2021), the denoiser GLIDE builds on.

Encoder: a 3x3 conv, then per resolution level `num_res_blocks` ResBlocks (+ self-attention at the
`attention_resolutions`) and a down-sampling ResBlock. A middle ResBlock-attention-ResBlock. Decoder:
the mirror image, each block concatenating the matching encoder activation (the U-Net skip,
Ronneberger et al. 2015). Every ResBlock receives the timestep embedding (plus the class embedding
when class-conditional). The network knows nothing about diffusion: it maps (x_t, t, condition) to
eps (and, with learn_sigma, the variance interpolation v).

Text conditioning (GLIDE, Nichol et al. 2021, section 3): a transformer encodes the caption; its
last-position output, projected by `transformer_proj`, is added to the timestep embedding (path 1:
every ResBlock sees the caption), and its whole output sequence is projected by each attention
layer's `encoder_kv` and put in front of that layer's keys and values (path 2: every pixel attends
to the words).

Cascade and editing inputs (GLIDE sections 3 and 4.3), added as extra input channels of the first
conv, in the released models' order [x_t | known image * mask | mask | upsampled low-res image]:
super_res models see the low-resolution image upsampled bilinearly to the model's size; inpaint
models see the known pixels (zero where the mask is 0) and the mask itself. With aug_level_embed, a
super_res model also sees how strongly its low-res input was noise-augmented (cascaded diffusion, Ho
et al. 2021): the level s is embedded like the timestep and added to the time embedding.

The network is fully convolutional (attention has no position embedding), so it accepts any H, W that
it can halve len(channel_mult) - 1 times: an upsampler may train on crops and sample whole images.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import UNetConfig
from .layers import AttentionBlock, Downsample, ResBlock, Upsample, normalization, timestep_embedding, zero_module
from .text import TextTransformer, tokenizer_vocab_size


class EmbedSequential(nn.ModuleList):
    """A sequence of layers; ResBlocks also get the embedding, attention blocks the context tokens."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


def input_channels(cfg: UNetConfig) -> int:
    """Channels of the first conv: x_t, plus (inpaint) image * mask and the mask, plus (super_res) the low-res image."""
    return cfg.in_channels * (1 + cfg.inpaint + cfg.super_res) + cfg.inpaint


def input_channel_groups(cfg: UNetConfig) -> dict[str, slice]:
    """Where each input sits among the first conv's channels, in the released order:
    {"x_t": 0:C, "inpaint_image": C:2C, "inpaint_mask": 2C:2C+1, "low_res": ...} (only the inputs cfg has)."""
    c, groups, start = cfg.in_channels, {}, 0
    for name, width, present in (("x_t", c, True), ("inpaint_image", c, cfg.inpaint), ("inpaint_mask", 1, cfg.inpaint),
                                 ("low_res", c, cfg.super_res)):
        if present:
            groups[name] = slice(start, start + width)
            start += width
    return groups


def encoder_blocks(cfg: UNetConfig, res: Callable[..., ResBlock], attn: Callable[[int], AttentionBlock]):
    """The U-Net's encoder half: a 3x3 conv, then per level num_res_blocks ResBlocks (+ attention at the
    attention_resolutions) and, between levels, a 2x down-sampling. Shared by the U-Net and the noised
    classifier. Returns (blocks, output channels of every block: the decoder's skip connections)."""
    ch, size = cfg.model_channels, cfg.image_size
    blocks = nn.ModuleList([EmbedSequential([nn.Conv2d(input_channels(cfg), ch, 3, padding=1)])])
    channels = [ch]
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            layers = [res(ch, mult * cfg.model_channels)]
            ch = mult * cfg.model_channels
            if size in cfg.attention_resolutions:
                layers.append(attn(ch))
            blocks.append(EmbedSequential(layers))
            channels.append(ch)
        if level != len(cfg.channel_mult) - 1:
            blocks.append(EmbedSequential([res(ch, down=True) if cfg.resblock_updown else Downsample(ch)]))
            channels.append(ch)
            size //= 2
    return blocks, channels


class UNet(nn.Module):
    """eps_theta(x_t, t[, labels | tokens, mask][, low_res][, inpaint_image, inpaint_mask]):
    [N, in_channels, H, W] -> [N, out_channels (x2 if learn_sigma), H, W].

    labels [N] long (class-conditional models); tokens [N, text_ctx] long and mask [N, text_ctx] bool
    (text-conditional models; the empty caption, all padding, is the unconditional input);
    low_res [N, in_channels, h, w] (super_res models; any h, w, upsampled to H, W);
    aug_level [N] long (aug_level_embed models): forward diffusion steps applied to low_res, 0 = clean;
    inpaint_image [N, in_channels, H, W] and inpaint_mask [N, 1, H, W], 1 = known, 0 = to fill (inpaint models).
    H, W: model.image_size, or any multiple of 2 ** (len(channel_mult) - 1) (crops).
    """

    def __init__(self, cfg: UNetConfig, context_channels: int | None = None):
        super().__init__()
        self.cfg = cfg
        ch = cfg.model_channels
        emb_dim = 4 * ch
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # One extra row for the "null" label: classifier-free guidance's unconditional input (Ho & Salimans).
        self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes > 0 else None
        # Cascaded diffusion's conditioning augmentation: the level s gets its own MLP over the same sinusoids as t.
        # Its last layer starts at zero, so adding this input (e.g. when fine-tuning) changes nothing at init.
        self.aug_embed = (nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), zero_module(nn.Linear(emb_dim, emb_dim)))
                          if cfg.aug_level_embed else None)
        self.text_encoder = self.transformer_proj = None
        if cfg.text_ctx > 0:
            vocab = cfg.text_vocab_size or tokenizer_vocab_size(cfg.tokenizer, cfg.text_ctx)
            self.text_encoder = TextTransformer(vocab, cfg.text_ctx, cfg.text_width, cfg.text_layers, cfg.text_heads,
                                                cfg.text_final_ln, cfg.text_padding)
            self.transformer_proj = nn.Linear(cfg.text_width, emb_dim)
            context_channels = cfg.text_width

        def res(c_in: int, c_out: int | None = None, **kw) -> ResBlock:
            return ResBlock(c_in, emb_dim, cfg.dropout, c_out, cfg.use_scale_shift_norm,
                            norm_groups=cfg.norm_groups, **kw)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, cfg.num_head_channels, context_channels, cfg.norm_groups)

        self.input_blocks, skip_channels = encoder_blocks(cfg, res, attn)
        ch, size = skip_channels[-1], cfg.image_size // 2 ** (len(cfg.channel_mult) - 1)

        self.middle_block = EmbedSequential([res(ch), attn(ch), res(ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * cfg.model_channels)]
                ch = mult * cfg.model_channels
                if size in cfg.attention_resolutions:
                    layers.append(attn(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, up=True) if cfg.resblock_updown else Upsample(ch))
                    size *= 2
                self.output_blocks.append(EmbedSequential(layers))

        out_channels = cfg.out_channels * (2 if cfg.learn_sigma else 1)
        self.out = nn.Sequential(normalization(ch, cfg.norm_groups), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def embed(self, timesteps: torch.Tensor, labels: torch.Tensor | None = None,
              aug_level: torch.Tensor | None = None) -> torch.Tensor:
        """The vector every ResBlock receives: MLP(sinusoid(t)) [+ label embedding] [+ MLP(sinusoid(s))].
        [N] -> [N, 4C]."""
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels))
        if self.aug_embed is not None:
            if aug_level is None:
                raise ValueError("this upsampler takes the low-res noise-augmentation level (model.aug_level_embed): "
                                 "pass aug_level [N], the forward diffusion steps applied to low_res (0 = clean)")
            emb = emb + self.aug_embed(timestep_embedding(aug_level, self.cfg.model_channels))
        elif aug_level is not None:
            raise ValueError("this model has no noise-augmentation input (model.aug_level_embed = false) "
                             "but got aug_level")
        if self.label_emb is not None:
            if labels is None:
                raise ValueError("this model is class-conditional: pass labels (use the null label "
                                 f"{self.cfg.num_classes} for unconditional)")
            # Checked on the CPU only: on a GPU the check would synchronise every step (pipelines check labels first).
            if labels.device.type == "cpu" and (labels.min() < 0 or labels.max() > self.cfg.num_classes):
                bad = labels[(labels < 0) | (labels > self.cfg.num_classes)][0].item()
                raise ValueError(f"label {bad} out of range: valid labels are 0..{self.cfg.num_classes - 1}, "
                                 f"and {self.cfg.num_classes} means 'no label'")
            emb = emb + self.label_emb(labels)
        elif labels is not None:
            raise ValueError("this model is unconditional (model.num_classes = 0) but got labels")
        return emb

    def encode_text(self, tokens: torch.Tensor | None, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled [N, 4C] for the time embedding, context [N, text_width, L] for the attention layers)."""
        if tokens is None:
            raise ValueError("this model is text-conditional: pass tokens and mask "
                             "(from tokenizer.padded_tokens_and_mask; "
                             "the empty caption \"\" is the unconditional input)")
        xf_out = self.text_encoder(tokens, mask)  # [N, L, W]
        # The last position is usually padding; the bidirectional transformer lets it gather the whole caption.
        return self.transformer_proj(xf_out[:, -1]), xf_out.transpose(1, 2)

    def conditioning_inputs(self, x: torch.Tensor, low_res: torch.Tensor | None, inpaint_image: torch.Tensor | None,
                            inpaint_mask: torch.Tensor | None) -> torch.Tensor:
        """x_t with the super-res / inpaint channels appended: [N, input_channels(cfg), H, W]."""
        c = self.cfg
        n, _, h, w = x.shape
        parts = [x]
        if c.inpaint:
            if inpaint_image is None or inpaint_mask is None:
                raise ValueError("this model inpaints (model.inpaint): pass inpaint_image [N, "
                                 f"{c.in_channels}, {h}, {w}] and inpaint_mask [N, 1, {h}, {w}] (1 = known, 0 = fill; "
                                 "an all-zero mask asks for a new image)")
            if tuple(inpaint_image.shape) != (n, c.in_channels, h, w):
                raise ValueError(f"inpaint_image has shape {tuple(inpaint_image.shape)} but x_t is {tuple(x.shape)}; "
                                 f"it must be [{n}, {c.in_channels}, {h}, {w}]")
            if tuple(inpaint_mask.shape) != (n, 1, h, w):
                raise ValueError(f"inpaint_mask has shape {tuple(inpaint_mask.shape)} but the image is "
                                 f"{tuple(inpaint_image.shape)}; the mask must be [{n}, 1, {h}, {w}] "
                                 "with 1 = keep, 0 = fill")
            inpaint_mask = inpaint_mask.to(x.dtype)
            parts += [inpaint_image.to(x.dtype) * inpaint_mask, inpaint_mask]
        elif inpaint_image is not None or inpaint_mask is not None:
            raise ValueError("this model does not inpaint (model.inpaint = false) but got inpaint_image / inpaint_mask")
        if c.super_res:
            if low_res is None:
                raise ValueError(f"this model upsamples (model.super_res): pass low_res [N, {c.in_channels}, h, w], "
                                 "the low-resolution image in [-1, 1]")
            if low_res.ndim != 4 or low_res.shape[:2] != (n, c.in_channels):
                raise ValueError(f"low_res has shape {tuple(low_res.shape)} but x_t is {tuple(x.shape)}; it must be "
                                 f"[{n}, {c.in_channels}, h, w]")
            # Bilinear, not nearest: the released upsamplers were trained on bilinearly upsampled inputs.
            parts.append(F.interpolate(low_res.to(x.dtype), size=(h, w), mode="bilinear", align_corners=False))
        elif low_res is not None:
            raise ValueError("this model does not upsample (model.super_res = false) but got low_res")
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None,
                tokens: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                low_res: torch.Tensor | None = None, inpaint_image: torch.Tensor | None = None,
                inpaint_mask: torch.Tensor | None = None, aug_level: torch.Tensor | None = None) -> torch.Tensor:
        c = self.cfg
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"x has shape {tuple(x.shape)} but this U-Net takes [N, {c.in_channels}, "
                             f"{c.image_size}, {c.image_size}] (model.in_channels, model.image_size)")
        divisor = 2 ** (len(c.channel_mult) - 1)
        if x.shape[2] % divisor or x.shape[3] % divisor:
            raise ValueError(f"x has shape {tuple(x.shape)} but this U-Net takes [N, {c.in_channels}, {c.image_size}, "
                             f"{c.image_size}] (model.image_size), or crops whose sides are multiples of {divisor}")
        x = self.conditioning_inputs(x, low_res, inpaint_image, inpaint_mask)
        emb, context = self.embed(timesteps, labels, aug_level), None
        if self.text_encoder is not None:
            pooled, context = self.encode_text(tokens, mask)
            emb = emb + pooled.to(emb.dtype)
        elif tokens is not None:
            raise ValueError("this model is not text-conditional (model.text_ctx = 0) but got tokens")
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.out(h)
