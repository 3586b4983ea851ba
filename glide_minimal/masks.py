"""Inpainting masks (chapter 7) and the resizing of images and masks between resolutions.

A mask is [1, H, W] floats, 1 = keep, 0 = fill. Random masks are drawn at DRAW_SIZE and shrunk with
downsample_mask, so a 16 px mask is exactly the 64 px one seen small: the base model and the upsampler
of a cascade fill the same region. No scene logic here (a mask that erases a named object is
shapesworld.region_mask); all randomness comes from a torch.Generator.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DRAW_SIZE = 256  # ShapesWorld's render size too, so a mask lines up with a render at every resolution


def check_size(image_size: int) -> int:
    """image_size itself, if it divides DRAW_SIZE (so it is an exact area-average of the drawing)."""
    if image_size < 1 or DRAW_SIZE % image_size:
        raise ValueError(f"image_size must divide {DRAW_SIZE} (e.g. 16, 32, 64, 128, 256), got {image_size}")
    return image_size


def area_downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, size, size]: each pixel the mean of the block it covers.

    For ShapesWorld this is exactly the lower-resolution render (both are area-averages of the 256 px
    render), so the upsampler learns from true pairs: the 16 px image really is the 64 px one, seen small.
    """
    if size < 1 or images.shape[-1] % size or images.shape[-2] % size:
        raise ValueError(f"cannot area-average {tuple(images.shape[-2:])} images to {size} px: size must divide them")
    return F.avg_pool2d(images, images.shape[-1] // size)


def downsample_mask(mask: torch.Tensor, image_size: int) -> torch.Tensor:
    """A mask [1, H, W] at a lower resolution [1, image_size, image_size]: a pixel is 'fill' if any pixel it
    covers is (nothing to fill is lost)."""
    factor = mask.shape[-1] // image_size
    if factor < 1 or mask.shape[-1] % image_size:
        raise ValueError(f"cannot downsample a {mask.shape[-1]} px mask to {image_size} px (must divide it)")
    return 1 - F.max_pool2d((1 - mask)[None], factor)[0]


def box_mask(image_size: int, generator: torch.Generator, min_frac: float = 0.25,
             max_frac: float = 0.6) -> torch.Tensor:
    """A random axis-aligned box to fill, each side min_frac..max_frac of the canvas. [1, H, W]."""
    n = DRAW_SIZE
    w, h = (torch.empty(2).uniform_(min_frac, max_frac, generator=generator) * n).round().long().tolist()
    x0 = torch.randint(0, n - w + 1, (1,), generator=generator).item()
    y0 = torch.randint(0, n - h + 1, (1,), generator=generator).item()
    mask = torch.ones(1, n, n)
    mask[:, y0:y0 + h, x0:x0 + w] = 0
    return downsample_mask(mask, check_size(image_size))


def freeform_mask(image_size: int, generator: torch.Generator, strokes: int = 3,
                  width_frac: float = 0.08) -> torch.Tensor:
    """Random brush strokes to fill: each a thick polyline of 4 random points. [1, H, W]."""
    n = DRAW_SIZE
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    fill = torch.zeros(n, n, dtype=torch.bool)
    for _ in range(strokes):
        points = torch.rand(4, 2, generator=generator) * 0.8 + 0.1
        for (ax, ay), (bx, by) in zip(points[:-1].tolist(), points[1:].tolist()):
            # distance from every pixel to the segment a-b
            vx, vy = bx - ax, by - ay
            u = (((x - ax) * vx + (y - ay) * vy) / max(vx * vx + vy * vy, 1e-12)).clamp(0, 1)
            fill |= (x - ax - u * vx) ** 2 + (y - ay - u * vy) ** 2 <= (width_frac / 2) ** 2
    return downsample_mask((~fill).float()[None], check_size(image_size))
