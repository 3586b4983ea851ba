"""ShapesWorld: a procedural, captioned image world for the text chapters (DESIGN.md section 4).

Every caption is exactly true because the image is drawn from it. Images are rendered at 256 px and
area-averaged down, so a 16 px image is exactly the 4x4 average of the 64 px one: an upsampler has true
high-resolution targets. All randomness comes from a torch.Generator. (Chapter 4 builds on this.) The
caption words live in vocabulary.py and the inpainting masks in masks.py; both are re-exported here
for older callers. region_mask, which erases a named object of a scene, stays here (chapter 7).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .captions import parse
from .masks import DRAW_SIZE, box_mask, check_size, downsample_mask, freeform_mask
from .vocabulary import COLOR_NAMES, POSITIONS, SHAPES, SIZE_NAMES
from .vocabulary import caption_words as vocabulary  # the name this module always had

__all__ = ["COLORS", "POSITIONS", "RENDER_SIZE", "SHAPES", "SIZES", "ShapeObject", "ShapesWorld",
           "all_combinations", "box_mask", "caption", "downsample_mask", "freeform_mask", "grid_center",
           "parse_caption", "region_mask", "render", "render_caption", "vocabulary"]

# The RGB of each color word, in vocabulary order (scenes draw a color by its index in this dict).
COLORS = dict(zip(COLOR_NAMES, [(230, 25, 25), (25, 200, 25), (40, 80, 255), (240, 220, 30), (220, 40, 220),
                                (30, 210, 220)], strict=True))
# The side of an object's bounding box, as a fraction of the canvas, for each size word.
SIZES = dict(zip(SIZE_NAMES, [0.35, 0.6], strict=True))
RENDER_SIZE = DRAW_SIZE  # every resolution is an area-average of this render (masks are drawn at it too)


@dataclass(frozen=True)
class ShapeObject:
    """One object: its attributes, and its bounding-box center (x, y) in [0, 1] canvas coordinates."""

    shape: str
    color: str
    size: str
    position: str
    center: tuple[float, float]

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape}"


def caption(objects: list[ShapeObject]) -> str:
    """"a large red circle in the top left" (one object); "a small blue square and a large yellow cross" (two)."""
    if len(objects) == 1:
        place = "in the center" if objects[0].position == "center" else (
            f"on the {objects[0].position}" if objects[0].position in ("left", "right")
            else f"in the {objects[0].position}")
        return f"{objects[0].phrase()} {place}"
    return " and ".join(o.phrase() for o in objects)


def grid_center(position: str, size: str) -> tuple[float, float]:
    """The center of a 3x3-grid position for an object of this size, kept fully inside the canvas."""
    row, col = divmod(POSITIONS.index(position), 3)
    half = SIZES[size] / 2
    reach = 0.5 - half - 0.02  # how far from the middle the center may go
    return 0.5 + (col - 1) * reach, 0.5 + (row - 1) * reach


def _mask(shape: str, center: tuple[float, float], side: float, n: int) -> tuple[torch.Tensor, tuple[slice, slice]]:
    """A shape whose bounding box has the given side (fraction of the canvas), on an n x n canvas: its boolean
    mask over the pixels of that box, and the box as (rows, columns) slices of the canvas.

    Every shape lies inside its box (|dx|, |dy| <= 1 below), so only the box's pixels are computed: the same
    arithmetic on the same coordinates as over the whole canvas, at a fraction of the cost."""
    coords = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    dx_line, dy_line = (coords - center[0]) / (side / 2), (coords - center[1]) / (side / 2)  # [-1, 1] in the box
    cols, rows = torch.nonzero(dx_line.abs() <= 1).flatten(), torch.nonzero(dy_line.abs() <= 1).flatten()
    box = (slice(rows[0].item(), rows[-1].item() + 1), slice(cols[0].item(), cols[-1].item() + 1))
    dy, dx = torch.meshgrid(dy_line[box[0]], dx_line[box[1]], indexing="ij")
    if shape == "circle":
        return dx**2 + dy**2 <= 1, box
    if shape == "square":
        return (dx.abs() <= 0.85) & (dy.abs() <= 0.85), box
    if shape == "triangle":  # apex up, base at the bottom of the box
        return (dy <= 1) & (dy >= -1) & (dx.abs() <= (dy + 1) / 2), box
    if shape == "cross":
        return ((dx.abs() <= 1) & (dy.abs() <= 0.3)) | ((dy.abs() <= 1) & (dx.abs() <= 0.3)), box
    raise ValueError(f"unknown shape {shape!r}; choose one of: {', '.join(SHAPES)}")


def render(objects: list[ShapeObject], image_size: int = 64) -> torch.Tensor:
    """[3, image_size, image_size] in [0, 1]: the objects on a black canvas (area-averaged from 256 px)."""
    check_size(image_size)
    canvas = torch.zeros(3, RENDER_SIZE, RENDER_SIZE, dtype=torch.float64)
    for obj in objects:  # later objects are drawn over earlier ones
        m, (rows, cols) = _mask(obj.shape, obj.center, SIZES[obj.size], RENDER_SIZE)
        color = torch.tensor(COLORS[obj.color], dtype=torch.float64)[:, None, None] / 255
        canvas[:, rows, cols] = torch.where(m, color, canvas[:, rows, cols])
    if image_size != RENDER_SIZE:
        canvas = F.avg_pool2d(canvas[None], RENDER_SIZE // image_size)[0]
    return canvas.float()


def render_caption(text: str, image_size: int = 64) -> torch.Tensor:
    """The one image a fully specified caption describes: [3, image_size, image_size] in [0, 1].

    Every attribute of a one-object caption fixes the picture (objects sit at their grid position's
    center), so a caption's render is the ground truth for an upsampled or edited sample of it.
    """
    objects = parse_caption(text)
    if len(objects) != 1 or None in objects[0]:
        raise ValueError(f"{text!r} does not fix one image: render_caption needs one object with its position, "
                         "e.g. 'a large red circle in the top left'")
    shape, color, size, position = objects[0]
    return render([ShapeObject(shape, color, size, position, grid_center(position, size))], image_size)


def parse_caption(text: str) -> list[tuple[str | None, str | None, str | None, str | None]]:
    """The (shape, color, size, position) of each object a caption names, None where it leaves one open.

    "a large red circle in the top left" -> [("circle", "red", "large", "top left")]; any caption of the
    grammar in captions.py reads: "something blue on the left" -> [(None, "blue", None, "left")]. A word
    outside it is an error that suggests the nearest known words.
    """
    return [(o.shape, o.color, o.size, o.position) for o in parse(text).objects]


def all_combinations() -> list[tuple[str, str, str, str]]:
    """Every single-object (shape, color, size, position): 4 * 6 * 2 * 9 = 432."""
    return list(itertools.product(SHAPES, COLORS, SIZES, POSITIONS))


class ShapesWorld:
    """Random captioned scenes. held_out: (shape, color) pairs never produced unless split="held_out".

    sample(n, generator) -> (images [n, 3, H, W] in [0, 1], captions, objects per image).
    """

    def __init__(self, image_size: int = 16, max_objects: int = 1,
                 held_out: tuple[tuple[str, str], ...] = (("triangle", "magenta"), ("cross", "cyan")),
                 min_gap: float = 0.02, two_object_share: float = 0.5):
        if max_objects not in (1, 2):
            raise ValueError(f"max_objects must be 1 or 2, got {max_objects}")
        if not 0.0 <= two_object_share <= 1.0:
            raise ValueError(f"two_object_share is a probability in [0, 1], got {two_object_share}")
        for shape, color in held_out:
            if shape not in SHAPES or color not in COLORS:
                raise ValueError(f"held-out pair ({shape!r}, {color!r}): shapes are {', '.join(SHAPES)}; "
                                 f"colors are {', '.join(COLORS)}")
        check_size(image_size)
        self.image_size, self.max_objects, self.held_out = image_size, max_objects, set(held_out)
        # The least gap between two objects' bounding boxes (a fraction of the canvas). At 0.02 a large and a
        # small object never fit side by side; at 0 they do, a hair apart (the varied captions' world).
        self.min_gap = min_gap
        # The share of two-object scenes when max_objects is 2. 0.5 draws the count as a fair coin (randint,
        # the stream every shipped model was trained on); any other share draws it from one uniform number.
        self.two_object_share = two_object_share

    def _pick(self, generator: torch.Generator, split: str) -> tuple[str, str]:
        while True:
            shape = SHAPES[torch.randint(len(SHAPES), (1,), generator=generator).item()]
            color = list(COLORS)[torch.randint(len(COLORS), (1,), generator=generator).item()]
            if ((shape, color) in self.held_out) == (split == "held_out"):
                return shape, color

    def _second_object(self, generator: torch.Generator) -> int:
        if self.two_object_share == 0.5:
            return torch.randint(2, (1,), generator=generator).item()
        return int(torch.rand(1, generator=generator).item() < self.two_object_share)

    def scene(self, generator: torch.Generator, split: str = "train") -> list[ShapeObject]:
        if split not in ("train", "held_out"):
            raise ValueError(f"unknown split {split!r}; choose one of: train, held_out")
        count = 1 if self.max_objects == 1 else 1 + self._second_object(generator)
        while True:
            objects = []
            for _ in range(count):
                shape, color = self._pick(generator, split)
                size = list(SIZES)[torch.randint(len(SIZES), (1,), generator=generator).item()]
                position = POSITIONS[torch.randint(len(POSITIONS), (1,), generator=generator).item()]
                objects.append(ShapeObject(shape, color, size, position, grid_center(position, size)))
            if count == 1 or not _overlap(objects[0], objects[1], self.min_gap):
                return objects

    def sample(self, n: int, generator: torch.Generator, split: str = "train"):
        scenes = [self.scene(generator, split) for _ in range(n)]
        images = torch.stack([render(s, self.image_size) for s in scenes])
        return images, [caption(s) for s in scenes], scenes


def _overlap(a: ShapeObject, b: ShapeObject, gap: float = 0.02) -> bool:
    """Bounding boxes come closer than `gap` (a fraction of the canvas), so the two objects could touch."""
    half = (SIZES[a.size] + SIZES[b.size]) / 2 + gap
    return abs(a.center[0] - b.center[0]) < half and abs(a.center[1] - b.center[1]) < half


# -- a mask that erases one object of a scene (chapter 7): [1, H, W], 1 = keep, 0 = fill ---------------
def region_mask(position: str, size: str, image_size: int, margin: float = 0.04) -> torch.Tensor:
    """A mask that fills the bounding box (+ margin, as a fraction of the canvas) of an object of this size at
    this grid position: erase it to replace "the object on the left". [1, H, W], 1 = keep, 0 = fill."""
    if position not in POSITIONS or size not in SIZES:
        raise ValueError(f"unknown position {position!r} or size {size!r}; positions: {', '.join(POSITIONS)}; "
                         f"sizes: {', '.join(SIZES)}")
    cx, cy = grid_center(position, size)
    half = SIZES[size] / 2 + margin
    coords = (torch.arange(RENDER_SIZE, dtype=torch.float64) + 0.5) / RENDER_SIZE
    inside_x = ((coords - cx).abs() <= half)[None, :]
    inside_y = ((coords - cy).abs() <= half)[:, None]
    return downsample_mask((~(inside_x & inside_y)).float()[None], check_size(image_size))
