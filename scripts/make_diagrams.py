"""Draw the book's static diagrams with matplotlib (no network).

    python scripts/make_diagrams.py          # writes book/images/cascade.png

The cascade figure shows real samples: the shipped tutorial models (chapter 4's base model, chapter 6's
upsampler) run on the figure's caption with a fixed seed, a few seconds on a CPU.

The figures are committed; re-run this after editing a diagram.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a script, not a notebook: no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _box(ax, x, y, w, h, title, lines, color):
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=color, edgecolor="#333333", linewidth=1.2,
        )
    )
    ax.text(x + w / 2, y + h - 0.17, title, ha="center", va="top", fontsize=10.5, weight="bold")
    ax.text(x + w / 2, y + h - 0.52, "\n".join(lines), ha="center", va="top", fontsize=8.5,
            linespacing=1.35)


def _arrow(ax, x0, y0, x1, y1, label=None, dy=0.12):
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14,
                                 linewidth=1.3, color="#333333"))
    if label:
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + dy, label, ha="center", va="bottom", fontsize=8)


def _image(ax, x, y, size, image, label):
    """An image [3, H, W] in [0, 1] drawn as a square of side `size`, with a label under it."""
    ax.imshow(image.permute(1, 2, 0).numpy(), extent=(x, x + size, y, y + size), interpolation="nearest",
              zorder=2)
    ax.add_patch(plt.Rectangle((x, y), size, size, fill=False, edgecolor="#333333", zorder=3))
    ax.text(x + size / 2, y - 0.12, label, ha="center", va="top", fontsize=8.5)


CAPTION = "a large red circle in the top left"


def samples(seed: int = 0):
    """The tutorial cascade on CAPTION: (base sample 16 px, its upsampled 64 px image), each [3, H, W]."""
    import torch

    import glide_minimal as gm

    torch.manual_seed(seed)
    pipe = gm.load_pipeline("tutorial-text")
    base = pipe(CAPTION, steps=50, seed=seed)
    high = pipe(CAPTION, steps=50, seed=seed, upsample=True)
    return base[0].cpu(), high[0].cpu()


def cascade(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10.4, 3.2), dpi=100)
    ax.set_xlim(0, 13.0)
    ax.set_ylim(0, 3.7)
    ax.set_aspect("equal")
    ax.axis("off")

    base, high = samples()
    ax.text(-0.2, 2.1, '"a large red\ncircle in the\ntop left"', ha="left", va="center", fontsize=9,
            style="italic")
    _arrow(ax, 1.25, 2.1, 1.75, 2.1)
    _box(ax, 1.75, 1.15, 2.6, 1.9, "text transformer",
         ["1.2B: 24 blocks x 2048", "last token -> time emb.", "all tokens -> attention"], "#e8eef9")
    _arrow(ax, 4.35, 2.1, 4.85, 2.1)
    _box(ax, 4.85, 1.15, 2.5, 1.9, "base U-Net",
         ["noise -> 64x64", "2.3B; 3.5B with text", "CFG, 100 steps"], "#fdf0d5")
    _image(ax, 7.7, 1.55, 0.75, base, "16 px here")
    _arrow(ax, 7.35, 1.92, 7.7, 1.92)
    _box(ax, 8.8, 1.15, 2.5, 1.9, "upsampler",
         ["64x64 -> 256x256", "1.5B (text width 1024)", "27 steps (fast27)"], "#e3f4e1")
    _arrow(ax, 8.45, 1.92, 8.8, 1.92)
    _image(ax, 11.65, 1.4, 1.0, high, "64 px here")
    _arrow(ax, 11.3, 1.92, 11.65, 1.92)
    # The caption also conditions the upsampler (through its own, smaller text transformer).
    ax.annotate("", xy=(10.05, 3.05), xytext=(3.05, 3.05),
                arrowprops=dict(arrowstyle="-|>", color="#777777", linestyle="--",
                                connectionstyle="arc3,rad=-0.10"))
    ax.text(6.55, 3.5, "the caption conditions both stages", ha="center", fontsize=8,
            color="#555555")
    ax.text(6.5, 0.35, "boxes: GLIDE's sizes.  images: samples of this book's tutorial cascade for the caption,\n"
            "base 16x16 -> upsampler 64x64 (the same 4x), 1-10 M parameters, seconds on a CPU",
            ha="center", fontsize=8.5, color="#444444")

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "book" / "images")
    args = parser.parse_args()
    out = args.out / "cascade.png"
    cascade(out)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
