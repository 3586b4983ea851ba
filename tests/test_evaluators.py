"""The independent evaluators and their judges (glide_minimal/evaluators.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import glide_minimal as gm
from glide_minimal.checkpoint import CheckpointError
from glide_minimal.evaluators import (
    MAX_CLASS_ENTROPY,
    DigitClassifier,
    DigitEvaluator,
    ShapesClassifier,
    ShapesEvaluator,
    load_evaluator,
    shapes_training_set,
)


def test_digit_classifier_rejects_the_wrong_image_shape():
    model = DigitClassifier(16)
    with pytest.raises(ValueError, match=r"takes \[N, 1, 16, 16\] images in \[0, 1\], got shape \(2, 1, 8, 8\)"):
        model(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"got shape \(1, 16, 16\)"):
        model.features(torch.zeros(1, 16, 16))
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)
    assert model.features(torch.zeros(2, 1, 16, 16)).shape == (2, 128)


def test_evaluator_quality_reports_every_measure():
    torch.manual_seed(0)
    evaluator = DigitEvaluator(DigitClassifier(8))
    g = torch.Generator().manual_seed(0)
    images, reference = torch.rand(20, 1, 8, 8, generator=g), torch.rand(20, 1, 8, 8, generator=g)
    q = evaluator.quality(images, reference)
    assert set(q) == {"confidence", "class_entropy", "fd", "kid", "precision", "recall", "diversity"}
    assert 0.1 <= q["confidence"] <= 1 and 0 <= q["class_entropy"] <= MAX_CLASS_ENTROPY + 1e-9
    labels = evaluator.probs(images).argmax(-1)
    assert evaluator.accuracy(images, labels) == 1.0
    assert evaluator.accuracy(images, (labels + 1) % 10) == 0.0


class ReadsTheClass(nn.Module):
    """A stand-in digit network: an 8 px image of brightness about k / 9 is class k; features: 4 pixels."""

    image_size = 8

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        k = images.mean((1, 2, 3)) * 9
        return -100 * (k[:, None] - torch.arange(10)) ** 2

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)[:, :4]


def images_of(classes: list[int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    brightness = torch.tensor(classes, dtype=torch.float32).view(-1, 1, 1, 1) / 9
    return (brightness + torch.empty(len(classes), 1, 8, 8).uniform_(-0.01, 0.01, generator=g)).clamp(0, 1)


def test_class_entropy_reaches_its_bound_only_when_every_digit_appears_equally():
    judge = DigitEvaluator(ReadsTheClass())
    reference = images_of(list(range(10)) * 3, seed=1)
    every_digit = images_of(list(range(10)) * 3, seed=2)
    assert judge.accuracy(every_digit, list(range(10)) * 3) == 1.0  # the stand-in reads what we drew
    assert judge.quality(every_digit, reference)["class_entropy"] == pytest.approx(MAX_CLASS_ENTROPY)
    collapsed = images_of([3] * 30, seed=3)
    assert judge.quality(collapsed, reference)["class_entropy"] == 0.0
    skewed = images_of([0] * 12 + list(range(1, 10)) * 2, seed=4)  # all digits, one of them too often
    assert 0 < judge.quality(skewed, reference)["class_entropy"] < MAX_CLASS_ENTROPY


def test_shapes_evaluator_scores_captions_and_names_bad_input():
    images, labels = shapes_training_set(16)
    judge = ShapesEvaluator(ShapesClassifier(16))
    preds = judge.predict(images[:2])
    assert set(preds[0]) == {"shape", "color", "size", "position"}
    captions = ["a large red circle in the center", "a small blue square"]
    acc = judge.caption_accuracy(images[:2], captions)
    assert set(acc) == {"shape", "color", "size", "position", "caption"}
    with pytest.raises(ValueError, match="reads one object per image"):
        judge.caption_accuracy(images[:1], ["a small blue square and a large red circle"])
    with pytest.raises(ValueError, match="not a ShapesWorld phrase"):
        judge.caption_accuracy(images[:1], ["a blue thing"])
    with pytest.raises(ValueError, match=r"takes \[N, 3, 16, 16\]"):
        judge.predict(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"reads 16 px images \(or a multiple of 16 px.*got 40 px"):
        judge.predict(torch.rand(1, 3, 40, 40))
    assert len(labels["position"]) == len(images) == 432


def test_load_evaluator_builds_the_judge_its_checkpoint_names_and_refuses_a_diffusion_model():
    assert gm.load_evaluator is load_evaluator
    assert isinstance(load_evaluator(), DigitEvaluator)  # digits-evaluator
    shapes = load_evaluator("shapes-evaluator-16")
    assert isinstance(shapes, ShapesEvaluator) and shapes.classifier.image_size == 16
    with pytest.raises(CheckpointError, match="'tutorial-ddpm' is a .* checkpoint, not an evaluator"):
        load_evaluator("tutorial-ddpm")
