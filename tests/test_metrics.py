"""Sample-quality measures and the shipped data sets (glide_minimal/metrics.py, glide_minimal/datasets.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glide_minimal.datasets import DIGITS_TEST_SIZE, PHOTOS, load_digits, load_photo
from glide_minimal.metrics import (
    attribute_retrieval,
    class_entropy,
    frechet_distance,
    kernel_distance,
    mean_pairwise_distance,
    precision_recall,
    seam_energy,
)


def features(n: int = 300, dim: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) @ torch.randn(dim, dim, generator=g)  # correlated features


# -- metrics ------------------------------------------------------------------------------------------

def test_frechet_distance_of_a_set_with_itself_is_zero():
    a = features()
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_a_shift_is_its_squared_length_and_grows_with_it():
    a, direction = features(), torch.tensor([1.0, -2.0, 0.5, 0.0])
    distances = [frechet_distance(a, a + s * direction) for s in (0.5, 1.0, 2.0)]
    assert distances == pytest.approx([s**2 * 5.25 for s in (0.5, 1.0, 2.0)], rel=1e-5)  # |direction|^2 = 5.25


def test_frechet_distance_sees_a_change_of_spread():
    a = features()
    assert frechet_distance(a, 2 * a) > 0.1 * a.var(0).sum().item()


def test_precision_recall_of_identical_sets_is_one_one():
    a = features()
    assert precision_recall(a, a.clone()) == (1.0, 1.0)


def test_precision_recall_of_disjoint_far_sets_is_zero_zero():
    a = features()
    assert precision_recall(a, a + 1000.0) == (0.0, 0.0)


def test_precision_recall_of_a_collapsed_fake_set_has_precision_but_no_recall():
    real = features(200)
    fake = real[:1].repeat(200, 1) + 1e-4 * features(200, seed=1)  # mode collapse onto one real sample
    precision, recall = precision_recall(real, fake)
    assert precision == 1.0 and recall < 0.05


def test_mean_pairwise_distance_of_a_3_4_5_triangle_is_4():
    points = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    assert mean_pairwise_distance(points) == pytest.approx(4.0)


def test_class_entropy_is_log2_k_for_equal_classes_and_zero_for_one():
    assert class_entropy(torch.arange(10).repeat(3), 10) == pytest.approx(math.log2(10))
    assert class_entropy(torch.tensor([0, 1, 2, 3]), 4) == pytest.approx(2.0)  # four equal classes: 2 bits
    assert class_entropy(torch.full((7,), 4), 10) == 0.0
    # three of one class, one of another: -(3/4 log2 3/4 + 1/4 log2 1/4) = 2 - (3/4) log2 3
    assert class_entropy(torch.tensor([2, 2, 2, 5]), 10) == pytest.approx(2 - 0.75 * math.log2(3))


def test_class_entropy_of_any_other_histogram_stays_below_the_uniform_one():
    g = torch.Generator().manual_seed(0)
    for n in (10, 30, 200):
        for _ in range(20):
            predicted = torch.randint(10, (n,), generator=g)
            counts = torch.bincount(predicted, minlength=10)
            if counts.min() == counts.max():  # uniform by chance: the bound itself
                continue
            assert 0 <= class_entropy(predicted, 10) < math.log2(10)


# -- data sets ----------------------------------------------------------------------------------------

def digit_indices(images_8px: torch.Tensor) -> list[int]:
    """Each 8x8 image's index in scikit-learn's digits (its 1,797 images are all distinct)."""
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits().images.reshape(-1, 64).astype(np.float32) / 16.0 * 2 - 1
    lookup = {row.tobytes(): i for i, row in enumerate(raw)}
    assert len(lookup) == len(raw)
    return [lookup[row.tobytes()] for row in images_8px.reshape(len(images_8px), 64).numpy()]


def test_digits_splits_are_disjoint_and_cover_the_data_set():
    train_x, train_y = load_digits(8, "train")
    test_x, test_y = load_digits(8, "test")
    assert (len(train_x), len(test_x)) == (1500, DIGITS_TEST_SIZE) and 1500 + 297 == 1797
    train_idx, test_idx = digit_indices(train_x), digit_indices(test_x)
    assert not set(train_idx) & set(test_idx)
    assert sorted(train_idx + test_idx) == list(range(1797))
    assert len(load_digits(8, "all")[0]) == 1797
    # labels travel with their images
    from sklearn.datasets import load_digits as sk_load_digits

    target = sk_load_digits().target
    assert train_y.tolist() == target[train_idx].tolist() and test_y.tolist() == target[test_idx].tolist()


@pytest.mark.parametrize("image_size", [8, 16])
def test_digits_shape_range_and_labels(image_size):
    images, labels = load_digits(image_size, "test")
    assert images.shape == (297, 1, image_size, image_size) and images.dtype == torch.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))


def test_digits_split_is_the_same_every_time():
    assert torch.equal(load_digits(8, "test")[0], load_digits(8, "test")[0])


def test_digits_unknown_split_error_lists_the_splits():
    with pytest.raises(ValueError, match="unknown split 'val'; choose one of: train, test, all"):
        load_digits(16, "val")


@pytest.mark.parametrize("image_size", [12, 4])
def test_digits_image_size_must_be_a_power_of_two_from_8(image_size):
    with pytest.raises(ValueError, match=f"image_size must be a power of two >= 8, got {image_size}"):
        load_digits(image_size)


@pytest.mark.parametrize("name", PHOTOS)
def test_photo_shape_and_range(name):
    photo = load_photo(name, 32)
    assert photo.shape == (3, 32, 32) and photo.dtype == torch.float32
    assert photo.min() >= -1 and photo.max() <= 1


@pytest.mark.parametrize("name", PHOTOS)
def test_photo_keeps_the_brightness_of_the_original(name):
    from skimage import data, util

    original = util.img_as_float(getattr(data, name)())  # [0, 1] whatever the stored dtype (uint8, bool)
    h, w = original.shape[:2]
    side = min(h, w)
    crop = original[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    photo = load_photo(name, 64)
    assert photo.mean().item() == pytest.approx(crop.mean() * 2 - 1, abs=0.05)


def test_unknown_photo_error_lists_the_choices():
    with pytest.raises(ValueError, match=f"unknown photo 'dog'; choose one of: {', '.join(PHOTOS)}"):
        load_photo("dog")


def test_kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g)
    same = kernel_distance(a, b)
    assert abs(same) < 0.05
    assert kernel_distance(a, b + 0.5) > same + 0.1
    assert kernel_distance(a, b + 1.0) > kernel_distance(a, b + 0.5)


def test_seam_energy_measures_the_step_across_the_mask_edge_only():
    mask = torch.ones(3, 1, 8, 8)
    mask[:, :, :, 4:] = 0  # fill the right half
    flat = torch.full((3, 8, 8), 0.5)
    seam = flat.clone()
    seam[:, :, 4:] = 0.8  # a step of 0.3 in every channel exactly at the edge
    inner = flat.clone()
    inner[:, :, 6:] = 0.8  # the same step, but inside the filled region
    energy = seam_energy(torch.stack([flat, seam, inner]), mask)
    assert energy.tolist() == pytest.approx([0.0, 3 * 0.3**2, 0.0])
    nothing = torch.ones(1, 1, 8, 8)
    assert seam_energy(flat[None], nothing).isnan().all()
    with pytest.raises(ValueError, match=r"masks must be \[N, 1, H, W\]"):
        seam_energy(flat[None], mask)


class _AttributeCLIP(torch.nn.Module):
    """A stand-in CLIP that reads the attributes it is told to: images are one-hot codes of their caption's
    values, captions embed the same way, and an unread attribute is left out of both."""

    def __init__(self, read: tuple[str, ...]):
        super().__init__()
        from glide_minimal.vocabulary import ATTRIBUTE_WORDS

        self.read = read
        self.slots = [(a, v) for a in ("shape", "color", "size", "position") for v in ATTRIBUTE_WORDS[a]]

    def code(self, text: str) -> torch.Tensor:
        from glide_minimal.captions import parse

        spec = parse(text).objects[0]
        return torch.tensor([float(a in self.read and getattr(spec, a) == v) for a, v in self.slots])

    def embed_image(self, x_t, t):  # the test's "images" are their captions' codes
        return x_t

    def embed_text(self, tokens, mask):
        return torch.stack([self.code(self.tokenizer.decode(row.tolist())) for row in tokens])


def test_attribute_retrieval_finds_what_a_clip_reads_and_what_it_does_not():
    from glide_minimal.models import get_tokenizer

    tokenizer = get_tokenizer("shapesworld", 12)
    captions = ["a large red circle in the top left", "a small blue square on the right",
                "a large green cross in the center", "a small yellow triangle in the bottom"]
    clip = _AttributeCLIP(read=("color", "size", "position"))  # blind to shape
    clip.tokenizer = tokenizer
    images = torch.stack([clip.code(c) for c in captions])
    result = attribute_retrieval(clip, tokenizer, images, torch.zeros(4, dtype=torch.long), captions)
    assert result == {"shape": 0.0, "color": 1.0, "size": 1.0, "position": 1.0}  # a tie is not a win
