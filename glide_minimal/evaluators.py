"""The independent evaluators: small CNNs trained on real data only, never on samples and never used
for guidance, so they can judge any model fairly; the judges that wrap them; their training loops;
and `load_evaluator` for the shipped ones.

- Digits (chapters 1-3): DigitClassifier, trained on the real train split; DigitEvaluator reports class
  accuracy, confidence and the measures of metrics.py on its features.
- ShapesWorld (chapters 4-7): ShapesClassifier reads the shape, color, size and position of a
  one-object render; ShapesEvaluator scores captions attribute by attribute. SceneClassifier reads
  scenes of one or two objects slot by slot (grid position); SceneEvaluator scores any caption of the
  varied grammar, binding included (which object has which attribute), and the freedom of what a
  caption leaves open.

Images passed to an evaluator are in [0, 1] (what pipelines return), at the evaluator's size or any multiple
of it: larger images are area-averaged down to it first (`native`), so the 16 px judges also read the GPU
tier's 32 px samples and the 64 px judge its 128 px ones. For ShapesWorld the area average of a render is
exactly the smaller render, so the judge sees what it was trained on.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .captions import parse
from .checkpoint import CheckpointError, load_state_dict_into
from .datasets import load_digits
from .masks import area_downsample
from .metrics import class_entropy, frechet_distance, kernel_distance, mean_pairwise_distance, precision_recall
from .pretrained import available, load_weights
from .shapesworld import ShapeObject, ShapesWorld, all_combinations, grid_center, parse_caption, render
from .vocabulary import COLOR_NAMES, POSITIONS, SHAPES, SIZE_NAMES

__all__ = ["ATTRIBUTES", "MAX_CLASS_ENTROPY", "DigitClassifier", "DigitEvaluator", "SceneClassifier",
           "SceneEvaluator", "ShapesClassifier", "ShapesEvaluator", "fresh_scenes", "load_evaluator", "scene_labels",
           "train_scene_evaluator", "native", "shapes_evaluator", "shapes_training_set",
           "train_digit_evaluator", "train_shapes_evaluator"]


def native(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images [N, C, S, S] at an evaluator's size `size`: area-averaged down when S is a multiple of it."""
    side = images.shape[-1]
    if images.ndim == 4 and side > size and side % size == 0 and images.shape[-2] == side:
        return area_downsample(images, size)
    if images.ndim == 4 and side != size and images.shape[-2] == side:
        raise ValueError(f"the evaluator reads {size} px images (or a multiple of {size} px, area-averaged down to "
                         f"it), got {side} px")
    return images  # the classifier names any other wrong shape


# -- digits (chapters 1-3) --------------------------------------------------------------------------------
class DigitClassifier(nn.Module):
    """[N, 1, 16, 16] in [0, 1] -> logits [N, 10]; `features` gives the 128-d penultimate layer."""

    def __init__(self, image_size: int = 16, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.image_size = image_size
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Flatten(), nn.Linear(2 * width * (image_size // 4) ** 2, feature_dim), nn.GELU(),
        )
        self.head = nn.Linear(feature_dim, 10)

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1:] != (1, self.image_size, self.image_size):
            raise ValueError(f"the digit evaluator takes [N, 1, {self.image_size}, {self.image_size}] images in "
                             f"[0, 1], got shape {tuple(images.shape)}")
        return images * 2 - 1

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self._check(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random translations by up to max_shift pixels (padding with the background value 0)."""
    n, _, h, w = images.shape
    padded = F.pad(images, [max_shift] * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


# The evaluators ship in float16: half the bytes of float32, and no decision of a judge on its test renders
# changes. scripts/train_evaluator.py publishes them in it.
SHIPPED_DTYPE = torch.float16


def _round_to_shipped_precision(model: nn.Module) -> nn.Module:
    """Round the weights to SHIPPED_DTYPE and back, in place, so that an evaluator's recorded accuracy is
    measured on exactly the weights a reader loads."""
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(SHIPPED_DTYPE).float())
    return model


def train_digit_evaluator(image_size: int = 16, steps: int = 1500, batch_size: int = 128, seed: int = 0,
                          lr: float = 2e-3) -> tuple[DigitClassifier, float]:
    """Train the evaluator on the real train split; returns (model, accuracy on the held-out test split)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x, y = load_digits(image_size, "train")
    x = (x + 1) / 2
    model = DigitClassifier(image_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch_size,), generator=g)
        loss = F.cross_entropy(model(_shift(x[idx], g)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    _round_to_shipped_precision(model.eval())
    x_test, y_test = load_digits(image_size, "test")
    with torch.no_grad():
        acc = (model((x_test + 1) / 2).argmax(1) == y_test).float().mean().item()
    return model, acc


class Judge:
    """What the judges share: a trained classifier (eval mode, no grad; its `image_size` is the size it reads)
    and its features of images at that size or a multiple of it."""

    def __init__(self, classifier: nn.Module):
        self.classifier = classifier.eval().requires_grad_(False)

    def _native(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.classifier.parameters(), torch.empty(0)).device  # samples may come from a GPU
        return native(images.float().to(device), self.classifier.image_size)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(self._native(images))


class DigitEvaluator(Judge):
    """The judge used throughout the book. Wraps a trained DigitClassifier."""

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self._native(images)).softmax(-1)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor | list[int]) -> float:
        """Fraction of images the evaluator labels as the requested class."""
        labels = torch.as_tensor(labels)
        return (self.probs(images).argmax(-1).cpu() == labels.cpu()).float().mean().item()

    def quality(self, images: torch.Tensor, reference: torch.Tensor, k: int = 3) -> dict[str, float]:
        """Measures of a set of samples against reference images (both [N, 1, H, W] in [0, 1]).

        confidence: mean top-class probability (does it look like *some* digit?);
        class_entropy: entropy (bits) of the predicted-class histogram, MAX_CLASS_ENTROPY = log2(10) = 3.32 when
        all classes appear equally (mode coverage); fd: Frechet distance of features (biased at small N); kid:
        kernel distance (unbiased); precision/recall; diversity.
        """
        probs = self.probs(images)
        entropy = class_entropy(probs.argmax(-1), 10)
        f_fake, f_real = self.features(images), self.features(reference)
        precision, recall = precision_recall(f_real, f_fake, k)
        unit = f_real.pow(2).sum(-1).mean().sqrt()  # scale so reference features have unit RMS norm: kernel values O(1)
        return {"confidence": probs.max(-1).values.mean().item(), "class_entropy": entropy,
                "fd": frechet_distance(f_real, f_fake), "kid": kernel_distance(f_real / unit, f_fake / unit),
                "precision": precision, "recall": recall,
                "diversity": mean_pairwise_distance(f_fake)}


# The digit judge's class_entropy when all ten classes appear equally often (its largest value).
MAX_CLASS_ENTROPY = math.log2(10)


# -- ShapesWorld (chapters 4-7) ---------------------------------------------------------------------------
ATTRIBUTES = ("shape", "color", "size", "position")


def _attribute_classes() -> dict[str, tuple[str, ...]]:
    """The classes of each attribute head, in vocabulary order (a class id is a position in its tuple)."""
    return {"shape": SHAPES, "color": COLOR_NAMES, "size": SIZE_NAMES, "position": POSITIONS}


def _conv_encoder(image_size: int, width: int, feature_dim: int, stem_convs: int) -> nn.Sequential:
    """[N, 3, S, S] -> features [N, feature_dim]: stem_convs 3x3 convs at full size, then stride-2 convs down to
    4x4 whatever the input size, then a linear layer (the ShapesWorld judges' shared body)."""
    layers, ch = [], 3
    for _ in range(stem_convs):
        layers += [nn.Conv2d(ch, width, 3, padding=1), nn.GELU()]
        ch = width
    downs = max(1, int(math.log2(image_size // 4)))
    for _ in range(downs):
        layers += [nn.Conv2d(ch, 2 * width, 3, stride=2, padding=1), nn.GELU()]
        ch = 2 * width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch * (image_size // 2**downs) ** 2, feature_dim),
                         nn.GELU())


def _checked_rgb(images: torch.Tensor, size: int, judge: str) -> torch.Tensor:
    if images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise ValueError(f"{judge} takes [N, 3, {size}, {size}] images in [0, 1], got shape {tuple(images.shape)}")
    return images


class ShapesClassifier(nn.Module):
    """[N, 3, S, S] in [0, 1] -> {attribute: logits} for one object's shape, color, size and position."""

    def __init__(self, image_size: int = 16, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.image_size = image_size
        self.body = _conv_encoder(image_size, width, feature_dim, stem_convs=1)
        self.heads = nn.ModuleDict({a: nn.Linear(feature_dim, len(c)) for a, c in _attribute_classes().items()})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(_checked_rgb(images, self.image_size, "the ShapesWorld evaluator") * 2 - 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(images)
        return {a: head(f) for a, head in self.heads.items()}


def _augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Nuisances a sampler's output has and a render has not: 1 px shifts, color gain, noise, blur."""
    n = len(images)
    x = _shift(images, g, max_shift=max(1, images.shape[-1] // 16))
    x = x * torch.empty(n, 3, 1, 1).uniform_(0.8, 1.1, generator=g)
    blur = torch.rand(n, 1, 1, 1, generator=g) < 0.3
    x = torch.where(blur, F.avg_pool2d(F.pad(x, [1] * 4, mode="replicate"), 3, stride=1), x)
    x = x + torch.randn(x.shape, generator=g) * torch.empty(n, 1, 1, 1).uniform_(0, 0.08, generator=g)
    return x.clamp(0, 1)


def shapes_training_set(image_size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Every single-object scene (held-out pairs included: the judge must know them) and its attribute labels."""
    classes = _attribute_classes()
    combos = all_combinations()
    images = torch.stack([render([ShapeObject(s, c, z, p, grid_center(p, z))], image_size) for s, c, z, p in combos])
    labels = {a: torch.tensor([classes[a].index(combo[i]) for combo in combos]) for i, a in enumerate(ATTRIBUTES)}
    return images, labels


def train_shapes_evaluator(image_size: int = 16, steps: int = 1500, batch_size: int = 128, seed: int = 0,
                           lr: float = 2e-3) -> tuple[ShapesClassifier, dict[str, float]]:
    """Train on clean renders with augmentation; returns (model, per-attribute accuracy on fresh augmented renders)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    images, labels = shapes_training_set(image_size)
    model = ShapesClassifier(image_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=g)
        logits = model(_augment(images[idx], g))
        loss = sum(F.cross_entropy(logits[a], labels[a][idx]) for a in ATTRIBUTES)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    _round_to_shipped_precision(model.eval())
    test_g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        logits = model(_augment(images.repeat(4, 1, 1, 1), test_g))
    acc = {a: (logits[a].argmax(-1) == labels[a].repeat(4)).float().mean().item() for a in ATTRIBUTES}
    with torch.no_grad():
        clean = model(images)
    acc["clean_all"] = torch.stack([clean[a].argmax(-1) == labels[a] for a in ATTRIBUTES]).all(0).float().mean().item()
    return model, acc


def share_of_verdicts(scores: list[dict[str, bool]]) -> dict[str, float]:
    """For each verdict of a caption_scores list, the fraction of images that got it."""
    return {k: sum(s[k] for s in scores) / len(scores) for k in scores[0]}


class ShapesEvaluator(Judge):
    """The independent ShapesWorld judge: reads each attribute of a one-object image (never used for guidance)."""

    def __init__(self, classifier: ShapesClassifier):
        super().__init__(classifier)
        self.classes = _attribute_classes()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[dict[str, str]]:
        """For each image [N, 3, S, S] in [0, 1]: {"shape": "circle", "color": "red", "size": ..., "position": ...}."""
        logits = self.classifier(self._native(images))
        idx = {a: logits[a].argmax(-1).tolist() for a in ATTRIBUTES}
        return [{a: self.classes[a][idx[a][i]] for a in ATTRIBUTES} for i in range(len(images))]

    def caption_scores(self, images: torch.Tensor, captions: list[str]) -> list[dict[str, bool]]:
        """Per image: is each captioned attribute read back, and "caption": all of them.

        Captions are one-object ShapesWorld captions; an attribute the caption leaves out counts as read back.
        """
        if len(captions) != len(images):
            raise ValueError(f"got {len(images)} images but {len(captions)} captions")
        wanted = []
        for c in captions:
            objects = parse_caption(c)
            if len(objects) != 1:
                raise ValueError(f"the evaluator reads one object per image; {c!r} names {len(objects)}")
            wanted.append(dict(zip(ATTRIBUTES, objects[0])))
        scores = []
        for w, g in zip(wanted, self.predict(images)):
            right = {a: w[a] is None or w[a] == g[a] for a in ATTRIBUTES}
            scores.append({**right, "caption": all(right.values())})
        return scores

    def caption_accuracy(self, images: torch.Tensor, captions: list[str]) -> dict[str, float]:
        """Fraction of images whose every captioned attribute the evaluator reads back ("caption"), and per
        attribute: the mean of caption_scores."""
        return share_of_verdicts(self.caption_scores(images, captions))

    def diversity(self, images: torch.Tensor, captions: list[str]) -> float:
        """Mean pairwise feature distance between images of the same caption, averaged over captions."""
        groups: dict[str, list[int]] = {}
        for i, c in enumerate(captions):
            groups.setdefault(c, []).append(i)
        feats = self.features(images)
        values = [mean_pairwise_distance(feats[idx]) for idx in groups.values() if len(idx) > 1]
        if not values:
            raise ValueError("diversity needs at least two images of some caption")
        return sum(values) / len(values)


# -- ShapesWorld scenes of one or two objects (chapter 4's varied captions) -------------------------------
SLOT_ATTRIBUTES = ("shape", "color", "size")  # what the scene judge reads at each of the 9 grid positions


class SceneClassifier(nn.Module):
    """[N, 3, S, S] in [0, 1] -> per grid position (slot): presence logit [N, 9] and {attribute: logits [N, 9, K]}.

    Objects of a scene sit at distinct 3x3 grid positions (two never share one), so a scene is exactly the
    set of occupied slots with the shape, color and size of each: reading it per slot tells which object
    has which attribute (binding), which a bag of attribute classifiers cannot.
    """

    def __init__(self, image_size: int = 16, width: int = 48, feature_dim: int = 384):
        super().__init__()
        self.image_size = image_size
        self.body = _conv_encoder(image_size, width, feature_dim, stem_convs=2)
        classes = _attribute_classes()
        self.sizes = {"present": 1, **{a: len(classes[a]) for a in SLOT_ATTRIBUTES}}
        self.head = nn.Linear(feature_dim, len(POSITIONS) * sum(self.sizes.values()))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(_checked_rgb(images, self.image_size, "the scene evaluator") * 2 - 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.head(self.features(images)).view(len(images), len(POSITIONS), -1)
        parts = dict(zip(self.sizes, out.split(list(self.sizes.values()), dim=-1)))
        parts["present"] = parts["present"][..., 0]
        return parts


def scene_labels(scenes) -> dict[str, torch.Tensor]:
    """Slot targets of scenes (lists of ShapeObject): present [N, 9] float, and attribute ids [N, 9] (-1 if empty)."""
    classes = _attribute_classes()
    labels = {"present": torch.zeros(len(scenes), len(POSITIONS)),
              **{a: torch.full((len(scenes), len(POSITIONS)), -1) for a in SLOT_ATTRIBUTES}}
    for i, scene in enumerate(scenes):
        for obj in scene:
            slot = POSITIONS.index(obj.position)
            labels["present"][i, slot] = 1
            for a in SLOT_ATTRIBUTES:
                labels[a][i, slot] = classes[a].index(getattr(obj, a))
    return labels


def _scene_loss(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits["present"], labels["present"])
    for a in SLOT_ATTRIBUTES:
        loss = loss + F.cross_entropy(logits[a].flatten(0, 1), labels[a].flatten(), ignore_index=-1)
    return loss


def _read_slots(logits: dict[str, torch.Tensor], classes) -> list[list[dict[str, str]]]:
    """The objects of each image: every slot whose presence logit is positive, with its attributes."""
    present = logits["present"] > 0
    ids = {a: logits[a].argmax(-1) for a in SLOT_ATTRIBUTES}
    return [[{"position": POSITIONS[k], **{a: classes[a][ids[a][i, k].item()] for a in SLOT_ATTRIBUTES}}
             for k in range(len(POSITIONS)) if present[i, k]] for i in range(len(present))]


def _judged_world(image_size: int) -> ShapesWorld:
    """Every scene the scene judge must read: one or two objects, every color-shape pair, objects a hair apart."""
    return ShapesWorld(image_size, 2, held_out=(), min_gap=0.0)


def train_scene_evaluator(image_size: int = 16, steps: int = 3000, batch_size: int = 128, seed: int = 0,
                          lr: float = 2e-3, num_scenes: int = 20000) -> tuple[SceneClassifier, dict[str, float]]:
    """Train on renders of random one- and two-object scenes (every color-shape pair, objects as close as the
    varied world puts them) with augmentation; returns (model, accuracies on fresh augmented scenes)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    world = _judged_world(image_size)
    images, _, scenes = world.sample(num_scenes, g)
    labels = scene_labels(scenes)
    model = SceneClassifier(image_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        idx = torch.randint(len(images), (batch_size,), generator=g)
        loss = _scene_loss(model(_augment(images[idx], g)), {k: v[idx] for k, v in labels.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    _round_to_shipped_precision(model.eval())
    test_g = torch.Generator().manual_seed(seed + 1)
    test_images, _, test_scenes = world.sample(2000, test_g)
    judge = SceneEvaluator(model)
    augmented = judge.scene_accuracy(_augment(test_images, test_g), test_scenes)
    return model, {"augmented_scene": augmented, "clean_scene": judge.scene_accuracy(test_images, test_scenes)}


def fresh_scenes(n: int, seed: int, image_size: int = 16):
    """(images [n, 3, S, S] in [0, 1], scenes): one- and two-object scenes of every color-shape pair, objects as
    close as the varied world puts them; seed + 1 of a judge's training seed gives its test scenes."""
    images, _, scenes = _judged_world(image_size).sample(n, torch.Generator().manual_seed(seed))
    return images, scenes


def _matches(spec: dict[str, str], obj: dict[str, str]) -> bool:
    return all(obj[a] == v for a, v in spec.items())


class SceneEvaluator(Judge):
    """The independent judge of scenes with one or two objects: which objects are where, with which attributes
    (never used for guidance). Captions are any of the varied grammar (captions.py)."""

    def __init__(self, classifier: SceneClassifier):
        super().__init__(classifier)
        self.classes = _attribute_classes()

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[list[dict[str, str]]]:
        """Each image's objects: [{"position": "left", "shape": "circle", "color": "red", "size": "small"}, ...]."""
        return _read_slots(self.classifier(self._native(images)), self.classes)

    def scene_accuracy(self, images: torch.Tensor, scenes) -> float:
        """Fraction of images whose every object (position, shape, color, size) is read exactly, none missed."""
        truth = [sorted((o.position, o.shape, o.color, o.size) for o in s) for s in scenes]
        read = [sorted((o["position"], o["shape"], o["color"], o["size"]) for o in objects)
                for objects in self.predict(images)]
        return sum(r == t for r, t in zip(read, truth)) / len(truth)

    def caption_scores(self, images: torch.Tensor, captions: list[str]) -> list[dict[str, bool]]:
        """Per image: "caption" (the right number of objects, and each caption object matched by a different
        object with every attribute it names), "count", "attributes" (every named attribute value is on some
        object, whichever) and "binding_error" (count and attributes right, yet no object has the right set)."""
        if len(captions) != len(images):
            raise ValueError(f"got {len(images)} images but {len(captions)} captions")
        scores = []
        for objects, text in zip(self.predict(images), captions):
            specs = [o.specified() for o in parse(text).objects]
            count = len(objects) == len(specs)
            exact = count and any(all(_matches(s, o) for s, o in zip(specs, perm))
                                  for perm in itertools.permutations(objects))
            named = [(a, v) for s in specs for a, v in s.items()]
            bag = all(sum(o[a] == v for o in objects) >= named.count((a, v)) for a, v in named)
            scores.append({"caption": exact, "count": count, "attributes": count and bag,
                           "binding_error": count and bag and not exact})
        return scores

    def caption_accuracy(self, images: torch.Tensor, captions: list[str]) -> dict[str, float]:
        """The fraction of images with each of caption_scores' verdicts."""
        return share_of_verdicts(self.caption_scores(images, captions))

    def open_diversity(self, images: torch.Tensor, captions: list[str]) -> float:
        """How freely samples fill what one-object captions leave open: for each caption, the entropy of each
        attribute it does not name over its samples' readings, divided by that attribute's largest entropy
        (log2 of its class count), averaged over attributes and captions. 0: always the same; 1: uniform."""
        groups: dict[str, list[dict[str, str]]] = {}
        named: dict[str, dict[str, str]] = {}
        for objects, text in zip(self.predict(images), captions):
            if text not in named:
                spec = parse(text).objects
                if len(spec) != 1:
                    raise ValueError(f"open_diversity reads one-object captions; {text!r} names {len(spec)}")
                named[text] = spec[0].specified()
            if objects:
                groups.setdefault(text, []).append(objects[0])
        values = []
        for text, objects in groups.items():
            open_attrs = [a for a in (*SLOT_ATTRIBUTES, "position") if a not in named[text]]
            for a in open_attrs:
                counts = torch.tensor([sum(o[a] == c for o in objects) for c in self.classes[a]], dtype=torch.float)
                p = counts[counts > 0] / counts.sum()
                values.append((-(p * p.log2()).sum() / math.log2(len(self.classes[a]))).item())
        if not values:
            raise ValueError("open_diversity needs captions that leave an attribute open, e.g. 'a red circle'")
        return sum(values) / len(values)


def load_evaluator(name: str = "digits-evaluator",
                   device: str | torch.device = "cpu") -> DigitEvaluator | ShapesEvaluator | SceneEvaluator:
    """A shipped independent evaluator, sha256-verified: "digits-evaluator", "shapes-evaluator-<size>"
    (16 or 64) or "scenes-evaluator-16". The checkpoint's config "kind" picks the network and its judge."""
    weights, config = load_weights(name)
    kinds = {"digit-evaluator": (DigitClassifier, DigitEvaluator),
             "shapes-evaluator": (ShapesClassifier, ShapesEvaluator),
             "scene-evaluator": (SceneClassifier, SceneEvaluator)}
    if config.get("kind") not in kinds:
        raise CheckpointError(f"{name!r} is a {config.get('kind')!r} checkpoint, not an evaluator ({', '.join(kinds)})")
    network, judge = kinds[config["kind"]]
    model = network(config["image_size"])
    load_state_dict_into(model, weights, name)
    return judge(model.to(device))


def shapes_evaluator(image_size: int, device: str | torch.device = "cpu") -> ShapesEvaluator:
    """The ShapesWorld judge for images of `image_size` px: the shipped one of the largest size that divides it
    (16 px for 16 and 32 px samples, 64 px for 64 and 128 px), which area-averages them to its own size."""
    sizes = sorted((int(n.rsplit("-", 1)[1]) for n in available() if n.startswith("shapes-evaluator-")), reverse=True)
    fits = [size for size in sizes if image_size % size == 0]
    if not fits:
        raise ValueError(f"no shipped ShapesWorld evaluator reads {image_size} px images; they read {sizes} px "
                         "and their multiples")
    return load_evaluator(f"shapes-evaluator-{fits[0]}", device)
