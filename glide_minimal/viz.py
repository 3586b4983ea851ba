"""Figures: image grids, denoising strips, schedule plots, and sliders over precomputed frames that work on the
static page as in a running notebook."""
from __future__ import annotations

import base64
import html
import io
import itertools
import json
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from einops import rearrange
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from .models import build_model
from .models.layers import AttentionBlock, Downsample, ResBlock, Upsample
from .speed import RELEASE_UPSAMPLE_STEPS, RELEASE_UPSAMPLE_TEMPERATURE


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """[N, C, H, W] in [0, 1] -> one [rows*(H+pad), nrow*(W+pad), C] array (C = 1 squeezed to 2-D)."""
    images = images.detach().float().cpu().clamp(0, 1)
    n, c, h, w = images.shape
    rows = -(-n // nrow)
    filler = torch.full((rows * nrow - n, c, h, w), pad_value)
    images = torch.nn.functional.pad(torch.cat([images, filler]), (0, pad, 0, pad), value=pad_value)
    grid = rearrange(images, "(r k) c h w -> (r h) (k w) c", k=nrow)[:-pad or None, :-pad or None]
    return grid[..., 0].numpy() if c == 1 else grid.numpy()


def show_images(images: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None, scale: float = 0.5):
    """Plot a grid of [N, C, H, W] images in [0, 1]; returns the axes."""
    grid = image_grid(images, nrow)
    if ax is None:
        rows = -(-len(images) // nrow)
        _, ax = plt.subplots(figsize=(max(2.0, nrow * scale * 1.2), max(1.0, rows * scale * 1.2)))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def denoising_strip(trajectory, num_frames: int = 8, sample_index: int = 0, show_pred_xstart: bool = True):
    """A figure: x_t (top) and the predicted x_0 (bottom) at evenly spaced steps of one sample's trajectory."""
    steps = len(trajectory.timesteps)
    picks = np.linspace(0, steps - 1, num_frames).round().astype(int)
    rows = 2 if show_pred_xstart else 1
    fig, axes = plt.subplots(rows, num_frames, figsize=(1.1 * num_frames, 1.25 * rows), squeeze=False)
    for j, i in enumerate(picks):
        for r, (series, label) in enumerate([(trajectory.x_t, "x_t"), (trajectory.pred_xstart, "pred x_0")][:rows]):
            img = ((series[i, sample_index] + 1) / 2).clamp(0, 1)
            axes[r, j].imshow(img.permute(1, 2, 0).squeeze(-1).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
            if j == 0:
                axes[r, j].set_ylabel(label, fontsize=8)
        axes[0, j].set_title(f"t={trajectory.timesteps[i]}", fontsize=8)
    fig.tight_layout()
    return fig


def figure_png(fig, dpi: int = 200) -> str:
    """A figure as a data: URI of a PNG (closes the figure). dpi 200: sharp on a high-DPI screen."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class FrameSlider:
    """Sliders over precomputed frames, one per control, as plain HTML and JavaScript: they work on the book's
    static page (no kernel needed) as well as in a running notebook. Jupyter shows it as an output (_repr_html_).

    controls: {name: values}; draw(*values) -> a matplotlib figure for one combination of values (one value
    per control, in the order given). Every combination is drawn once, up front, and embedded as a PNG.
    """

    _count = itertools.count()

    def __init__(self, controls: dict[str, Sequence], draw: Callable[..., plt.Figure], value: dict | None = None,
                 width_px: int | None = None, dpi: int = 200):
        if not controls or any(len(values) == 0 for values in controls.values()):
            raise ValueError(f"every control needs at least one value, got {controls}")
        value = value or {}
        unknown = set(value) - set(controls)
        if unknown:
            raise ValueError(f"value names unknown controls {sorted(unknown)}; the controls are {list(controls)}")
        self.controls = {name: list(values) for name, values in controls.items()}
        self.start = []
        for name, values in self.controls.items():
            if name in value and value[name] not in values:
                raise ValueError(f"start value {value[name]!r} of {name!r} is not one of its values {values}")
            self.start.append(values.index(value[name]) if name in value else 0)
        # key "i,j,...": the indices of the values, one per control
        lists = list(self.controls.values())
        self.frames = {",".join(map(str, idx)): figure_png(draw(*(v[i] for v, i in zip(lists, idx))), dpi)
                       for idx in itertools.product(*(range(len(v)) for v in lists))}
        self.width_px = width_px
        self.id = f"gm-frames-{next(self._count)}"

    def _repr_html_(self) -> str:
        rows = []
        for k, (name, values) in enumerate(self.controls.items()):
            labels = json.dumps([str(v) for v in values])
            rows.append(f'<label style="display:block">{html.escape(name)} '
                        f'<input type="range" min="0" max="{len(values) - 1}" step="1" value="{self.start[k]}" '
                        f'data-control="{k}" data-labels="{html.escape(labels)}" style="vertical-align:middle"> '
                        f'<output>{html.escape(str(values[self.start[k]]))}</output></label>')
        width = f' style="width:{self.width_px}px;max-width:100%"' if self.width_px else ' style="max-width:100%"'
        first = self.frames[",".join(map(str, self.start))]
        script = (
            "(function () {"
            f"var root = document.getElementById({json.dumps(self.id)});"
            f"var frames = {json.dumps(self.frames)};"
            "var inputs = root.querySelectorAll('input[data-control]');"
            "function update() {"
            "  var key = Array.prototype.map.call(inputs, function (i) { return i.value; }).join(',');"
            "  root.querySelector('img').src = frames[key];"
            "  inputs.forEach(function (i) {"
            "    i.nextElementSibling.textContent = JSON.parse(i.dataset.labels)[i.value]; });"
            "}"
            "inputs.forEach(function (i) { i.addEventListener('input', update); });"
            "})();")
        return (f'<div class="gm-frames" id="{self.id}">{"".join(rows)}'
                f'<img src="{first}" alt="precomputed frame"{width}></div><script>{script}</script>')


def timestep_scrubber(trajectory, sample_index: int = 0, num_frames: int = 25) -> FrameSlider:
    """A slider over a trajectory's steps showing x_t and the predicted x_0 (num_frames of them, evenly spaced,
    the first and last included); it works on the static page too."""
    steps = sorted({round(i) for i in np.linspace(0, len(trajectory.timesteps) - 1, num_frames)})

    def draw(step: int):
        fig, axes = plt.subplots(1, 2, figsize=(3.2, 1.8))
        for ax, series, label in zip(axes, (trajectory.x_t, trajectory.pred_xstart), ("x_t", "pred x_0")):
            img = ((series[step, sample_index] + 1) / 2).clamp(0, 1).permute(1, 2, 0).squeeze(-1)
            ax.imshow(img.cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{label}, t={trajectory.timesteps[step]}", fontsize=8)
            ax.set_axis_off()
        return fig

    return FrameSlider({"step": steps}, draw, width_px=320)


def _describe(block) -> tuple[str, int, bool]:
    """(label, output channels, has attention) of one EmbedSequential block of the U-Net."""
    parts, channels, attn = [], None, False
    for layer in block:
        if isinstance(layer, ResBlock):
            kind = ("ResDown" if isinstance(layer.x_upd, torch.nn.AvgPool2d)
                    else "ResUp" if isinstance(layer.x_upd, torch.nn.Upsample) else "Res")
            channels = layer.out_layers[-1].out_channels
            parts.append(kind)
        elif isinstance(layer, AttentionBlock):
            attn = True
            parts.append("Attn")
        elif isinstance(layer, (Downsample, Upsample)):
            parts.append(type(layer).__name__)
        elif isinstance(layer, torch.nn.Conv2d):
            channels = layer.out_channels
            parts.append("Conv")
    return "+".join(parts), channels, attn


# The diagram's one-letter names of the parts of a block.
ABBREVIATIONS = {"Res": "R", "ResDown": "Rv", "ResUp": "R^", "Attn": "A", "Downsample": "v", "Upsample": "^",
                 "Conv": "C"}


def unet_diagram(model, ax=None):
    """Draw a U-Net's blocks from the model itself: encoder down the left, decoder up the right,
    skip connections across, resolution on the y axis, and the embedding path into every ResBlock."""
    cfg = model.cfg
    blocks = ([("enc", b) for b in model.input_blocks] + [("mid", model.middle_block)]
              + [("dec", b) for b in model.output_blocks])
    if ax is None:  # about 0.4 in a block: the page shows it near its natural size, labels 8 pt
        _, ax = plt.subplots(figsize=(min(11, 0.4 * len(blocks) + 1.2), 3.8))
    size, positions = cfg.image_size, []
    colors = {"enc": "#cfe3f7", "mid": "#f7e3c6", "dec": "#d9f2d0"}
    for i, (part, block) in enumerate(blocks):
        label, channels, attn = _describe(block)
        level = int(np.log2(cfg.image_size // size))
        y = -level
        ax.add_patch(Rectangle((i - 0.38, y - 0.34), 0.76, 0.68, facecolor=colors[part],
                               edgecolor="crimson" if attn else "0.3", linewidth=2 if attn else 1))
        short = "\n".join(ABBREVIATIONS.get(piece, piece) for piece in label.split("+"))
        ax.text(i, y + 0.02, short, ha="center", va="center", fontsize=8)
        ax.text(i, y - 0.45, f"{channels}", ha="center", va="top", fontsize=7, color="0.3")
        positions.append((i, y))
        if "Down" in label:
            size //= 2
        elif "Up" in label:
            size *= 2
    n_enc = len(model.input_blocks)
    for k in range(n_enc):  # decoder block k consumes the encoder activation n_enc-1-k (a stack)
        (x0, y0), (x1, y1) = positions[n_enc - 1 - k], positions[n_enc + 1 + k]
        ax.add_patch(FancyArrowPatch((x0, y0 + 0.3), (x1, y1 + 0.3), connectionstyle="arc3,rad=-0.12",
                                     arrowstyle="-|>", mutation_scale=6, color="0.55", linewidth=0.6))
    for (x0, y0), (x1, y1) in zip(positions, positions[1:]):
        ax.annotate("", (x1 - 0.38, y1), (x0 + 0.38, y0), arrowprops=dict(arrowstyle="-|>", color="0.2", lw=0.8))
    levels = len(cfg.channel_mult)
    ax.set_yticks([-level for level in range(levels)],
                  [f"{cfg.image_size // 2**level} px" for level in range(levels)], fontsize=8)
    ax.set_xticks([])
    ax.set_xlim(-0.8, len(blocks) - 0.2)
    ax.set_ylim(-levels + 0.2, 1.6)
    emb = "t -> sinusoid -> MLP" + (" + label embedding" if cfg.num_classes else "")
    ax.set_title(f"embedding: {emb} -> scale/shift of every ResBlock's norm\n"
                 "R: ResBlock  A: self-attention (red border)  v ^: down/up  C: conv;  "
                 "number: channels;  grey arcs: skips", fontsize=8)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    return ax


def text_conditioning_diagram(model, ax=None):
    """GLIDE's two routes from caption to pixels, labelled with this model's sizes (GLIDE's paper has no figure)."""
    m = model.cfg
    emb = 4 * m.model_channels
    attn_sizes = ", ".join(f"{s} px" for s in sorted(m.attention_resolutions, reverse=True))
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 4.4))
    boxes = {  # name: (x, y, text, color)
        "caption": (0.5, 3.2, '"a large red circle\nin the top left"', "#ffffff"),
        "tokens": (3.5, 3.2, f"word tokens [N, {m.text_ctx}]\n+ mask\n(pad at the end)", "#eeeeee"),
        "xf": (6.5, 3.2, f"text transformer\n{m.text_layers} layers x {m.text_width}, {m.text_heads} heads\n"
                         "padding embedding\nfinal LayerNorm", "#e6d9f2"),
        "last": (9.7, 4.3, f"last position [N, {m.text_width}]\n-> transformer_proj\n-> [N, {emb}]", "#f7e3c6"),
        "seq": (9.7, 2.0, f"all positions\n[N, {m.text_width}, {m.text_ctx}]\n-> encoder_kv of\n"
                          "each attention layer", "#cfe3f7"),
        "time": (9.7, 5.6, f"t -> sinusoid -> MLP\n[N, {emb}]", "#eeeeee"),
        "res": (12.9, 4.9, "+ : the embedding\nevery ResBlock gets\n(scale, shift of\nits GroupNorm)", "#f7e3c6"),
        "attn": (12.9, 2.0, f"attention ({attn_sizes}):\nkeys, values =\n[text tokens | pixels]", "#cfe3f7"),
    }
    width = 2.8
    _draw_boxes(ax, boxes, width)

    def arrow(a: str, b: str, color: str = "0.2", label: str | None = None) -> None:
        (xa, ya), (xb, yb) = boxes[a][:2], boxes[b][:2]
        start = (xa + width / 2, ya) if xb > xa else (xa, ya + 0.55)
        end = (xb - width / 2, yb) if xb > xa else (xb, yb - 0.55)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color=color, linewidth=1.3))
        if label:
            ax.text((start[0] + end[0]) / 2 - 0.15, (start[1] + end[1]) / 2 + 0.15, label, fontsize=8,
                    color=color, ha="right")

    arrow("caption", "tokens")
    arrow("tokens", "xf")
    arrow("xf", "last", "#c56a00", "path 1")
    arrow("xf", "seq", "#2a6fb0", "path 2")
    arrow("time", "res")
    arrow("last", "res", "#c56a00")
    arrow("seq", "attn", "#2a6fb0")
    ax.set_xlim(-1.0, 14.4)
    ax.set_ylim(1.2, 6.3)
    ax.axis("off")
    ax.set_title("GLIDE's text conditioning: path 1 tells every ResBlock what the caption says (globally);\n"
                 "path 2 lets every pixel look up the words it needs", fontsize=9)
    return ax


def _draw_boxes(ax, boxes: dict, width: float = 2.4, height: float = 1.0) -> None:
    """Rounded boxes {name: (x center, y center, text, color)} for the diagrams."""
    for x, y, text, color in boxes.values():
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.05",
                                    facecolor=color, edgecolor="0.3", linewidth=0.8))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)


def cascade_diagram(base_cfg, upsample_cfg, *, base_steps: int | str = 25, guidance_scale: float = 3.0,
                    upsample_steps: str = RELEASE_UPSAMPLE_STEPS, aug_level: int | None = None, ax=None):
    """GLIDE's two-stage cascade with these configs' sizes: caption -> base (guided) -> low-res image ->
    bilinear upsample (+ noise augmentation) -> concatenated to x_t of the upsampler -> high-res image.
    For inpainting configs (model.inpaint) the known image times the mask and the mask join both stages' inputs."""
    b, u = base_cfg.model, upsample_cfg.model
    params = lambda cfg: sum(p.numel() for p in build_model(cfg, device="meta").parameters()) / 1e6
    level = upsample_cfg.data.low_res_aug_sample if aug_level is None else aug_level
    up_in = u.in_channels * (3 if u.inpaint else 2) + (1 if u.inpaint else 0)
    if ax is None:
        _, ax = plt.subplots(figsize=(12.5, 3.6))
    boxes = {
        "caption": (1.0, 2.6, '"a large red circle\nin the top left"', "#ffffff"),
        "base": (4.2, 2.6, f"base U-Net, {b.image_size} px\n{params(base_cfg):.2f} M parameters\n"
                           + ("inputs: x_t, image*mask, mask\n" if b.inpaint else "")
                           + f"{base_steps} steps, CFG scale {guidance_scale:g}", "#e6d9f2"),
        "low": (7.4, 2.6, f"{b.image_size} px sample\n[N, {b.in_channels}, {b.image_size}, {b.image_size}]", "#eeeeee"),
        "bilinear": (7.4, 0.8, f"bilinear x{u.image_size // b.image_size} -> {u.image_size} px\n+ augmentation: "
                               f"{level} forward\nsteps of noise (q_sample)", "#f7e3c6"),
        "up": (10.6, 2.6, f"upsampler U-Net, {u.image_size} px\n{params(upsample_cfg):.2f} M parameters\n"
                          f"{up_in} input channels:\n"
                          + ("x_t, image*mask,\nmask, low-res" if u.inpaint else "x_t, low-res"), "#cfe3f7"),
        "out": (13.8, 2.6, f"{u.image_size} px image\n{upsample_steps}, temperature "
                           f"{RELEASE_UPSAMPLE_TEMPERATURE:g},\nno guidance", "#eeeeee"),
    }
    _draw_boxes(ax, boxes, width=2.8, height=1.4)

    def arrow(start, end, color="0.2", style="-|>"):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=10, color=color, linewidth=1.3))

    for left, right in [("caption", "base"), ("base", "low"), ("up", "out")]:
        arrow((boxes[left][0] + 1.45, 2.6), (boxes[right][0] - 1.45, 2.6))
    arrow((7.4, 1.85), (7.4, 1.55))
    arrow((8.85, 0.8), (9.6, 1.85), "#c56a00")
    arrow((1.0, 3.45), (10.6, 3.45), "#2a6fb0", "-")  # the caption also conditions the upsampler
    arrow((10.6, 3.45), (10.6, 3.35), "#2a6fb0")
    ax.text(5.8, 3.55, "the same caption, through the upsampler's own (smaller) text transformer", fontsize=7,
            color="#2a6fb0", ha="center")
    ax.set_xlim(-0.5, 15.3)
    ax.set_ylim(0.0, 3.8)
    ax.axis("off")
    ax.set_title("GLIDE's cascade: a small image from the caption first, then 4x more pixels conditioned on it",
                 fontsize=8)
    return ax


@torch.no_grad()
def text_attention_maps(model, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
                        mask: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """How much attention each pixel pays to each text position, per attention layer of a text U-Net.

    Returns [(layer name, maps [N, text_ctx, h, w])], averaged over heads: the share of a pixel's
    softmax (over text tokens and pixels together) that lands on each text position.
    """
    blocks = [(name, m) for name, m in model.named_modules()
              if isinstance(m, AttentionBlock) and m.encoder_kv is not None]
    for _, block in blocks:
        block.keep_attention = True
    sizes = {}
    hooks = [block.register_forward_pre_hook(lambda mod, args, name=name: sizes.__setitem__(name, args[0].shape[-2:]))
             for name, block in blocks]
    try:
        model(x_t, t, tokens=tokens, mask=mask)
    finally:
        for h in hooks:
            h.remove()
        for _, block in blocks:
            block.keep_attention = False
    maps = []
    for name, block in blocks:
        h, w = sizes[name]
        text = block.attention[..., :tokens.shape[1]].mean(1)  # [N, h*w, L]
        maps.append((name, text.transpose(1, 2).reshape(len(x_t), tokens.shape[1], h, w)))
        block.attention = None
    return maps
