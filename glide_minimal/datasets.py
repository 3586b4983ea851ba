"""Data that ships inside packages, so nothing downloads at run time.

- Digits: the 1,797 real 8x8 handwritten digits of UCI optdigits (Alpaydin & Kaynak 1998) that
  scikit-learn ships, resized to the config's resolution and scaled to [-1, 1].
- Photos: scikit-image's sample photographs, for showing the forward process on a real image.
- ShapesWorld (shapesworld.py): generated captioned scenes for the text chapters.
"""
from __future__ import annotations

import numpy as np
import skimage.data
import skimage.util
import torch
import torch.nn.functional as F

from .captions import describe
from .config import CHOICES
from .shapesworld import COLORS, SHAPES, ShapeObject, ShapesWorld, all_combinations, caption, grid_center, render

DIGITS_TEST_SIZE = 297  # held out from every training run; evaluators and bits/dim use it
PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "cat", "horse", "rocket", "grass")
SPLITS = ("train", "test", "all")


def load_digits(image_size: int = 16, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Real handwritten digits: images [N, 1, image_size, image_size] in [-1, 1] and labels [N] in 0..9.

    The split is fixed (a seeded permutation): 1,500 train and 297 test images.
    """
    # here, not at the top: scikit-learn takes seconds to import, and only the digits need it
    from sklearn.datasets import load_digits as sk_load_digits

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    bunch = sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)[:, None]  # gray levels 0..16 -> [0, 1]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.from_numpy(np.random.RandomState(0).permutation(len(labels)))
    if split == "train":
        order = order[DIGITS_TEST_SIZE:]
    elif split == "test":
        order = order[:DIGITS_TEST_SIZE]
    images, labels = images[order], labels[order]
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (images.clamp(0, 1) * 2 - 1).contiguous(), labels


def load_photo(name: str = "astronaut", image_size: int = 64) -> torch.Tensor:
    """A scikit-image sample photo as [3, image_size, image_size] in [-1, 1] (center-cropped square)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of: {', '.join(PHOTOS)}")
    img = skimage.util.img_as_float32(getattr(skimage.data, name)())  # uint8 and bool images alike -> [0, 1]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)
    side = min(img.shape[1:])
    top, left = (img.shape[1] - side) // 2, (img.shape[2] - side) // 2
    img = img[:, top:top + side, left:left + side]
    img = F.interpolate(img[None], size=(image_size, image_size), mode="bilinear", antialias=True,
                        align_corners=False)[0]
    return img.clamp(0, 1) * 2 - 1


def parse_held_out(pairs) -> tuple[tuple[str, str], ...]:
    """("magenta triangle", ...) -> (("triangle", "magenta"), ...): the (shape, color) pairs ShapesWorld holds out."""
    out = []
    for pair in pairs:
        words = pair.split()
        if len(words) != 2 or words[0] not in COLORS or words[1] not in SHAPES:
            raise ValueError(f"held-out pair {pair!r} must be 'color shape' with a color in {', '.join(COLORS)} "
                             f"and a shape in {', '.join(SHAPES)}")
        out.append((words[1], words[0]))
    return tuple(out)


def load_shapesworld(image_size: int = 16, max_objects: int = 1, split: str = "train", num_scenes: int = 4000,
                     held_out=("magenta triangle", "cyan cross"), seed: int = 0,
                     captions: str = "canonical", two_object_share: float = 0.5) -> tuple[torch.Tensor, list[str]]:
    """Captioned ShapesWorld scenes: images [N, 3, image_size, image_size] in [-1, 1] and N captions.

    max_objects=1: every single-object scene of the split exactly once (the world has 432; the held-out
    (color, shape) pairs are in split "held_out" only). max_objects=2: num_scenes random scenes with one
    or two objects, drawn with `seed`. captions="varied" (max_objects=2): objects may sit a hair apart (so
    a large and a small one fit side by side), and each scene gets a caption people might write
    (captions.describe, training phrasings), drawn from the same generator. two_object_share: the share of
    scenes with two objects (max_objects=2).
    """
    if captions not in ("canonical", "varied"):
        raise ValueError(f"unknown captions {captions!r}; choose one of: canonical, varied")
    if split not in ("train", "held_out"):
        raise ValueError(f"unknown ShapesWorld split {split!r}; choose one of: train, held_out")
    held = parse_held_out(held_out)
    if captions == "varied":
        if max_objects != 2:
            raise ValueError("varied captions describe scenes of one or two objects: pass max_objects=2")
        world = ShapesWorld(image_size, 2, held, min_gap=0.0, two_object_share=two_object_share)
        g = torch.Generator().manual_seed(seed)
        scenes = [world.scene(g, split) for _ in range(num_scenes)]
        return (torch.stack([render(s, image_size) for s in scenes]) * 2 - 1,
                [describe(s, g) for s in scenes])
    world = ShapesWorld(image_size, max_objects, held, two_object_share=two_object_share)
    if max_objects == 1:
        scenes = [[ShapeObject(shape, color, size, pos, grid_center(pos, size))]
                  for shape, color, size, pos in all_combinations()
                  if ((shape, color) in held) == (split == "held_out")]
        images = torch.stack([render(s, image_size) for s in scenes])
        captions = [caption(s) for s in scenes]
    else:
        images, captions, _ = world.sample(num_scenes, torch.Generator().manual_seed(seed), split)
    return images * 2 - 1, captions


def load_dataset(data_cfg, split: str = "train") -> tuple[torch.Tensor, torch.Tensor | list[str]]:
    """The training data a DataConfig names: (images [N, C, H, W] in [-1, 1], labels [N] or N captions)."""
    if data_cfg.dataset == "digits":
        return load_digits(data_cfg.image_size, split)
    if data_cfg.dataset == "shapesworld":
        return load_shapesworld(data_cfg.image_size, data_cfg.max_objects, "train" if split == "all" else split,
                                data_cfg.num_scenes, data_cfg.held_out, seed=0, captions=data_cfg.captions,
                                two_object_share=data_cfg.two_object_share)
    raise ValueError(f"unknown dataset {data_cfg.dataset!r}; choose one of: {', '.join(CHOICES['data.dataset'])}")
