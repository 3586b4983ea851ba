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
    SceneClassifier,
    SceneEvaluator,
    ShapesClassifier,
    ShapesEvaluator,
    load_evaluator,
    scene_labels,
    shapes_training_set,
)
from glide_minimal.shapesworld import ShapeObject, ShapesWorld, grid_center, render


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
    with pytest.raises(ValueError, match="unknown word 'dragon'"):
        judge.caption_accuracy(images[:1], ["a blue dragon"])
    assert judge.caption_accuracy(images[:1], ["a blue thing"])["shape"] == 1.0  # an open attribute is not scored
    with pytest.raises(ValueError, match=r"takes \[N, 3, 16, 16\]"):
        judge.predict(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"reads 16 px images \(or a multiple of 16 px.*got 40 px"):
        judge.predict(torch.rand(1, 3, 40, 40))
    assert len(labels["position"]) == len(images) == 432


def test_shapes_evaluator_scores_each_image_and_accuracy_is_their_mean():
    from glide_minimal.evaluators import shapes_evaluator
    from glide_minimal.shapesworld import render_caption

    judge = shapes_evaluator(16)
    drawn = ["a large red circle in the center", "a small blue square in the top left"]
    images = torch.stack([render_caption(c, 16) for c in drawn])
    asked = ["a large red circle in the center", "a small green square in the top left"]
    scores = judge.caption_scores(images, asked)
    assert scores[0] == dict.fromkeys(["shape", "color", "size", "position", "caption"], True)
    assert scores[1] == {"shape": True, "color": False, "size": True, "position": True, "caption": False}
    acc = judge.caption_accuracy(images, asked)
    assert acc == {"shape": 1.0, "color": 0.5, "size": 1.0, "position": 1.0, "caption": 0.5}


def test_load_evaluator_builds_the_judge_its_checkpoint_names_and_refuses_a_diffusion_model():
    assert gm.load_evaluator is load_evaluator
    assert isinstance(load_evaluator(), DigitEvaluator)  # digits-evaluator
    shapes = load_evaluator("shapes-evaluator-16")
    assert isinstance(shapes, ShapesEvaluator) and shapes.classifier.image_size == 16
    with pytest.raises(CheckpointError, match="'tutorial-ddpm' is a .* checkpoint, not an evaluator"):
        load_evaluator("tutorial-ddpm")


def _obj(shape, color, size, position):
    return ShapeObject(shape, color, size, position, grid_center(position, size))


def test_scene_judge_reads_two_objects_and_tells_binding_errors_from_missing_attributes():
    judge = load_evaluator("scenes-evaluator-16")
    assert isinstance(judge, SceneEvaluator)
    scene = [_obj("circle", "red", "small", "top left"), _obj("square", "blue", "large", "bottom right")]
    swapped = [_obj("circle", "blue", "small", "top left"), _obj("square", "red", "large", "bottom right")]
    other = [_obj("circle", "green", "small", "top left"), _obj("square", "blue", "large", "bottom right")]
    one = [_obj("circle", "red", "small", "top left")]
    images = torch.stack([render(s, 16) for s in (scene, swapped, other, one)])
    text = "a small red circle and a large blue square"
    scores = judge.caption_scores(images, [text] * 4)
    assert [s["caption"] for s in scores] == [True, False, False, False]
    assert [s["binding_error"] for s in scores] == [False, True, False, False]
    assert [s["count"] for s in scores] == [True, True, True, False]
    assert judge.predict(images[3:])[0] == [{"position": "top left", "shape": "circle", "color": "red",
                                              "size": "small"}]
    acc = judge.caption_accuracy(images[:1], ["in the upper left corner there is a red disk that is little and "
                                              "a box that is big and blue"])
    assert acc["caption"] == 1.0


def test_scene_judge_reads_fresh_scenes_and_measures_open_attributes():
    judge = load_evaluator("scenes-evaluator-16")
    world = ShapesWorld(16, 2, held_out=(), min_gap=0.0)
    images, _, scenes = world.sample(300, torch.Generator().manual_seed(7))
    truth = [sorted(vars(o)[a] for o in s for a in ("position",)) for s in scenes]
    read = [sorted(o["position"] for o in objs) for objs in judge.predict(images)]
    assert sum(r == t for r, t in zip(read, truth)) / len(truth) > 0.95
    labels = scene_labels(scenes)
    assert labels["present"].sum(1).tolist() == [len(s) for s in scenes]
    # "a red circle" leaves size and position open: renders spread over them score high, one repeated image 0
    reds = [_obj("circle", "red", z, p) for z in ("small", "large") for p in ("top left", "center", "bottom right")]
    spread = torch.stack([render([o], 16) for o in reds])
    assert judge.open_diversity(spread, ["a red circle"] * 6) > 0.5
    assert judge.open_diversity(spread[:1].repeat(6, 1, 1, 1), ["a red circle"] * 6) == 0.0
    with pytest.raises(ValueError, match="one-object captions"):
        judge.open_diversity(spread[:1], ["a red circle and a blue box"])
    with pytest.raises(ValueError, match="leave an attribute open"):
        judge.open_diversity(spread[:1], ["a large red circle in the center"])
    with pytest.raises(ValueError, match=r"takes \[N, 3, 16, 16\]"):
        SceneClassifier(16)(torch.rand(1, 1, 16, 16))
