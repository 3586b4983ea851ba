"""Training inputs of the cascade and editing models (chapters 6 and 7): the low-resolution image of a
super-resolution model, its noise augmentation, random crops, and random inpainting masks.

Every function is deterministic given its generator, so the Trainer's batch of step k stays a function
of (seed, k): resuming replays exactly, and every process of a distributed run draws the same crops and
levels for the global batch. Masks are drawn with one generator per example, so a process renders only
the masks of its own slice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .shapesworld import box_mask, freeform_mask


def area_downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, size, size]: each pixel the mean of the block it covers.

    For ShapesWorld this is exactly the lower-resolution render (both are area-averages of the 256 px
    render), so the upsampler learns from true pairs: the 16 px image really is the 64 px one, seen small.
    """
    if size < 1 or images.shape[-1] % size or images.shape[-2] % size:
        raise ValueError(f"cannot area-average {tuple(images.shape[-2:])} images to {size} px: size must divide them")
    return F.avg_pool2d(images, images.shape[-1] // size)


def draw_crop_corners(n: int, image_size: int, crop_size: int, factor: int, generator: torch.Generator) -> torch.Tensor:
    """Top-left corners (y, x) [n, 2] of random crop_size crops, in pixels of the image_size image.

    Corners lie on the low-res grid (multiples of factor), so the matching low-res crop covers exactly the
    same part of the scene: crop(low_res, corners // factor, crop_size // factor).
    """
    positions = (image_size - crop_size) // factor + 1
    return torch.randint(positions, (n, 2), generator=generator) * factor


def crop(images: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] and corners [N, 2] (y, x) -> the N crops [N, C, size, size]."""
    return torch.stack([img[:, y:y + size, x:x + size] for img, (y, x) in zip(images, corners.tolist())])


def draw_aug_levels(n: int, max_level: int, generator: torch.Generator) -> torch.Tensor:
    """Augmentation levels s [n], uniform in 0..max_level (Ho et al. 2021 train on a range of levels)."""
    return torch.randint(max_level + 1, (n,), generator=generator)


def augment_low_res(diffusion, low_res: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Gaussian conditioning augmentation (cascaded diffusion, Ho et al. 2021, section 4.2).

    The low-res image z_0 is replaced by z_s ~ q(z_s | z_0) = N(sqrt(abar_s) z_0, (1 - abar_s) I), the image
    after s forward steps of `diffusion` (DDPM Eq. 4). s = 0 leaves it clean; s >= 1 is q_sample at chain
    index s - 1 (the code's index t is the paper's step t + 1). Training on noised conditioning makes the
    upsampler robust to the base model's small artefacts, which it never sees in true low-res renders.
    low_res [N, C, h, w], levels [N] long, noise [N, C, h, w] -> [N, C, h, w].
    """
    noised = diffusion.q_sample(low_res, (levels - 1).clamp(min=0), noise)
    return torch.where((levels > 0).reshape(-1, 1, 1, 1).to(low_res.device), noised, low_res)


def example_generator(seed: int, step: int, index: int) -> torch.Generator:
    """A generator for example `index` of step `step`'s global batch (independent of the process count)."""
    g = torch.Generator()
    g.manual_seed(((seed * 1_000_003 + step) * 100_003 + 7_919 + index) % (2**63))
    return g


def random_masks(indices: range | list[int], image_size: int, kinds: tuple[str, ...], seed: int, step: int) -> torch.Tensor:
    """Inpainting masks [len(indices), 1, image_size, image_size] for these examples of step's global batch.

    Each example draws its kind (box or free-form strokes, as GLIDE's fine-tuning erases random regions,
    section 4.3) and the mask itself from example_generator(seed, step, index). 1 = keep, 0 = fill.
    """
    makers = {"box": box_mask, "freeform": freeform_mask}
    masks = []
    for index in indices:
        g = example_generator(seed, step, index)
        kind = kinds[torch.randint(len(kinds), (1,), generator=g).item()]
        masks.append(makers[kind](image_size, g))
    return torch.stack(masks)
