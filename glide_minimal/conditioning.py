"""Training batches: which examples, timesteps and noise a step draws, and the model inputs built from them.
Chapters 6 and 7 add the low-resolution image of a super-resolution model, its noise augmentation, random
crops, and random inpainting masks.

Every draw comes from generators seeded with (seed, step), so the Trainer's batch of step k stays a function
of (seed, k): resuming replays exactly, and every process of a distributed run draws the same global batch
(images, t, noise, crops, levels) and keeps its own slice. Masks are drawn with one generator per example, so
a process renders only the masks of its own slice.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .checks import stream_seed
from .config import Config, low_res_size
from .masks import box_mask, freeform_mask

MASK_MAKERS = {"box": box_mask, "freeform": freeform_mask}  # config.CHOICES["data.mask_kinds"], drawn


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
    """Augmentation levels k [n], uniform in 0..max_level (Ho et al. 2021 train on a range of levels)."""
    return torch.randint(max_level + 1, (n,), generator=generator)


def augment_low_res(diffusion, low_res: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Gaussian conditioning augmentation (cascaded diffusion, Ho et al. 2021, section 4.2).

    The low-res image z_0 is replaced by z_k ~ q(z_k | z_0) = N(sqrt(abar_k) z_0, (1 - abar_k) I), the image
    after k forward steps of `diffusion` (DDPM Eq. 4). k = 0 leaves it clean; k >= 1 is q_sample at chain
    index k - 1 (the code's index t is the paper's step t + 1). Training on noised conditioning makes the
    upsampler robust to the base model's small artefacts, which it never sees in true low-res renders.
    low_res [N, C, h, w], levels [N] long, noise [N, C, h, w] -> [N, C, h, w].
    """
    noised = diffusion.q_sample(low_res, (levels - 1).clamp(min=0), noise)
    return torch.where((levels > 0).reshape(-1, 1, 1, 1).to(low_res.device), noised, low_res)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of step `step`'s global batch: every process draws the same numbers."""
    # 63 bits, as the first runs were seeded: the shipped checkpoints replay their batches only with these seeds.
    return torch.Generator().manual_seed(stream_seed(seed, step, bits=63))


def example_generator(seed: int, step: int, index: int) -> torch.Generator:
    """A generator for example `index` of step `step`'s global batch (independent of the process count)."""
    # The multipliers and the offset 7_919 are the first runs' (shipped checkpoints replay with them), and keep
    # these streams apart from step_generator's.
    return torch.Generator().manual_seed(stream_seed(seed, step, 7_919 + index, multipliers=(1_000_003, 100_003),
                                                     bits=63))


def random_masks(indices: range | list[int], image_size: int, kinds: tuple[str, ...], seed: int,
                 step: int) -> torch.Tensor:
    """Inpainting masks [len(indices), 1, image_size, image_size] for these examples of step's global batch.

    Each example draws its kind (box or free-form strokes, as GLIDE's fine-tuning erases random regions,
    section 4.3) and the mask itself from example_generator(seed, step, index). 1 = keep, 0 = fill.
    """
    masks = []
    for index in indices:
        g = example_generator(seed, step, index)
        kind = kinds[torch.randint(len(kinds), (1,), generator=g).item()]
        masks.append(MASK_MAKERS[kind](image_size, g))
    return torch.stack(masks)


# -- a training step's batch ----------------------------------------------------------------------------------
@dataclass
class StepDraws:
    """The random draws of one step's global batch of n examples (or of one process's slice of it).

    idx [n] (which images), t [n], noise [n, C, s, s] (s: the crop size, or the image size), drop [n] (bool:
    replace the label / caption by the null one); crops only: corners [n, 2]; augmented super-res only:
    levels [n] and aug_noise [n, C, s / factor, s / factor]. All on the CPU.
    """

    idx: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    drop: torch.Tensor
    corners: torch.Tensor | None = None
    levels: torch.Tensor | None = None
    aug_noise: torch.Tensor | None = None

    def take(self, part: slice) -> StepDraws:
        """The draws of examples `part` of the batch."""
        return StepDraws(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[part]
                            for f in fields(self)})


def super_res_factor(cfg: Config) -> int:
    """How many times smaller the low-res input is than the image (1 without one)."""
    return cfg.model.image_size // low_res_size(cfg) if cfg.model.super_res else 1


def draw_step(cfg: Config, image_shape: torch.Size, num_images: int, num_timesteps: int, step: int) -> StepDraws:
    """Step's draws for the whole global batch (train.batch_size examples) of a dataset of num_images images
    of image_shape [C, H, W], from step_generator(train.seed, step)."""
    data, n, (channels, _, side) = cfg.data, cfg.train.batch_size, image_shape
    g = step_generator(cfg.train.seed, step)
    size, factor = data.crop_size or side, super_res_factor(cfg)  # crops: x_start (and its noise) is the crop
    draws = StepDraws(idx=torch.randint(num_images, (n,), generator=g),
                      t=torch.randint(num_timesteps, (n,), generator=g),
                      noise=torch.randn((n, channels, size, size), generator=g),
                      drop=torch.rand(n, generator=g) < data.p_uncond)
    # Chapters 6-7 draw after the original draws, so configs without crops or augmentation replay old runs.
    if data.crop_size:
        draws.corners = draw_crop_corners(n, side, size, factor, g)
    if cfg.model.super_res and data.low_res_aug_max:
        draws.levels = draw_aug_levels(n, data.low_res_aug_max, g)
        draws.aug_noise = torch.randn((n, channels, size // factor, size // factor), generator=g)
    return draws


def rank_slice(n: int, rank: int, world: int) -> slice:
    """The examples of a global batch of n that process `rank` of `world` trains on."""
    return slice(rank * n // world, (rank + 1) * n // world)


def crop_pair(x_start: torch.Tensor, low_res: torch.Tensor | None, corners: torch.Tensor, size: int,
              factor: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The size x size crops of x_start [n, C, H, W] at corners [n, 2], and of low_res [n, C, H / factor, W / factor]
    (if any) the same part of the scene, seen small."""
    if low_res is not None:
        low_res = crop(low_res, corners // factor, size // factor)
    return crop(x_start, corners, size), low_res


def drop_conditioning(cond: dict[str, torch.Tensor], drop: torch.Tensor, cfg: Config) -> dict[str, torch.Tensor]:
    """Class or caption inputs {"labels": [n]} / {"tokens", "mask": [n, L]} with the `drop` [n] examples made
    unconditional, for classifier-free guidance; {} for an unconditional model. Changes cond in place."""
    m = cfg.model
    if m.num_classes > 0:
        cond["labels"][drop] = m.num_classes  # the null label
    elif m.text_ctx > 0:
        cond["tokens"][drop] = 0  # the empty caption: all padding (GLIDE's unconditional input)
        cond["mask"][drop] = False
    else:
        return {}
    return cond


def low_res_inputs(cfg: Config, diffusion, low_res: torch.Tensor, draws: StepDraws) -> dict[str, torch.Tensor]:
    """A super-resolution model's inputs: {"low_res": [n, C, h, w]}, noise-augmented at draws.levels when
    data.low_res_aug_max > 0, and {"aug_level": [n]} (the level, 0 = clean) when the model embeds it."""
    device = low_res.device
    if cfg.data.low_res_aug_max:
        levels = draws.levels.to(device)
        low_res = augment_low_res(diffusion, low_res, levels, draws.aug_noise.to(device))
    else:
        levels = torch.zeros_like(draws.t).to(device)
    return {"low_res": low_res, "aug_level": levels} if cfg.model.aug_level_embed else {"low_res": low_res}


def inpaint_inputs(cfg: Config, x_start: torch.Tensor, examples: slice, image_size: int, step: int,
                   corners: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """An inpainting model's inputs (GLIDE section 4.3: erase a random region; the rest and the mask are
    inputs): the image x_start [n, C, s, s] and the masks [n, 1, s, s] of these examples of the global batch,
    drawn at image_size and cropped like x_start when corners [n, 2] are given."""
    masks = random_masks(range(examples.start, examples.stop), image_size, cfg.data.mask_kinds, cfg.train.seed, step)
    masks = masks.to(x_start.device)
    if corners is not None:
        masks = crop(masks, corners, x_start.shape[-1])
    return {"inpaint_image": x_start, "inpaint_mask": masks}


def training_batch(cfg: Config, images: torch.Tensor, cond: dict[str, torch.Tensor], diffusion, step: int,
                   rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """Process `rank` of `world`'s slice of step's global batch: x_start [n, C, s, s], t [n], noise [n, C, s, s]
    and the model's keyword inputs, on the device of `images`.

    images [N, C, H, W]; cond: the dataset's conditioning, {"labels": [N]} or {"tokens", "mask": [N, L]}, plus
    "low_res" [N, C, h, w] for a super-resolution model. s: data.crop_size, or H.
    """
    examples = rank_slice(cfg.train.batch_size, rank, world)
    draws = draw_step(cfg, images.shape[1:], len(images), diffusion.num_timesteps, step).take(examples)
    idx = draws.idx.to(images.device)
    return batch_inputs(cfg, images[idx], {k: v[idx] for k, v in cond.items()}, draws, diffusion, step, examples)


def draw_indices(cfg: Config, num_images: int, step: int) -> torch.Tensor:
    """The images [train.batch_size] step's global batch takes: draw_step's idx, without its other draws (a
    streaming loader decodes exactly these files ahead of the step)."""
    return torch.randint(num_images, (cfg.train.batch_size,), generator=step_generator(cfg.train.seed, step))


def batch_inputs(cfg: Config, x_start: torch.Tensor, kwargs: dict[str, torch.Tensor], draws: StepDraws, diffusion,
                 step: int, examples: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """x_start, t, noise and the model's keyword inputs of `examples` of step's global batch, given their images
    x_start [n, C, H, W], their conditioning kwargs (as training_batch's cond, taken at the examples) and their
    draws. Changes kwargs."""
    device, side = x_start.device, x_start.shape[-1]
    low_res = kwargs.pop("low_res", None)
    if cfg.data.crop_size:
        x_start, low_res = crop_pair(x_start, low_res, draws.corners, cfg.data.crop_size, super_res_factor(cfg))
    if cfg.task == "diffusion":  # a classifier or a CLIP takes the labels or captions as they are
        kwargs = drop_conditioning(kwargs, draws.drop.to(device), cfg)
        if cfg.model.super_res:
            kwargs.update(low_res_inputs(cfg, diffusion, low_res, draws))
        if cfg.model.inpaint:
            kwargs.update(inpaint_inputs(cfg, x_start, examples, side, step, draws.corners))
    return x_start, draws.t.to(device), draws.noise.to(device), kwargs
