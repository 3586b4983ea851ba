"""A training step's batch for the shipped tutorial configs (glide_minimal/conditioning.py, Trainer.batch).

The batches must never change: the shipped checkpoints are reproducible by their recorded commands only if
every step draws the same images, timesteps, noise, dropped captions, crops, augmentation levels and masks.
RECORDED pins them; the other tests check what a batch must be whatever its draws.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F

from glide_minimal.conditioning import MASK_MAKERS
from glide_minimal.config import CHOICES, load_config
from glide_minimal.diffusion import GaussianDiffusion
from glide_minimal.train import Trainer

# Fingerprints of Trainer.batch(step) for (config, rank, world, step), recorded from the code before the batch
# assembly moved out of Trainer.batch into conditioning.training_batch (git 322ef9c). Integer and bool tensors:
# the first 16 hex digits of the sha256 of their int64 bytes (exact); float tensors: (sum, sum of x * w) in
# float64, w = (position % 7) - 3 (a weighting that also notices reordered elements), rounded to 6 decimals.
# tutorial-text-clip-stage1's hard negatives (clip.hard_negatives: 4) were recorded when its recipe took them up; the
# rest of its batch is unchanged by them.
RECORDED = {
    ("tutorial-ddpm", 0, 1, 0): {"x_start": (-6356.5, -0.601562), "t": "648582c2920d9350",
        "noise": (-125.518867, 205.326895)},
    ("tutorial-ddpm", 0, 1, 7): {"x_start": (-6533.0, -2.53125), "t": "9771edc0ea14fe63",
        "noise": (102.973315, -235.57654)},
    ("tutorial-digits", 0, 1, 0): {"x_start": (-6356.5, -0.601562), "t": "648582c2920d9350",
        "noise": (-125.518867, 205.326895), "labels": "bdac5c900c07ef2a"},
    ("tutorial-digits", 0, 1, 7): {"x_start": (-6533.0, -2.53125), "t": "9771edc0ea14fe63",
        "noise": (102.973315, -235.57654), "labels": "090c6342d73e3acf"},
    ("tutorial-digits-classifier", 0, 1, 0): {"x_start": (-6356.5, -0.601562), "t": "648582c2920d9350",
        "noise": (-125.518867, 205.326895), "labels": "eb8ccd687e7940f4"},
    ("tutorial-digits-classifier", 0, 1, 7): {"x_start": (-6533.0, -2.53125), "t": "9771edc0ea14fe63",
        "noise": (102.973315, -235.57654), "labels": "c5de1b544f2098d4"},
    ("tutorial-text", 0, 1, 0): {"x_start": (-41996.040425, 11.247859), "t": "648582c2920d9350",
        "noise": (-391.095286, 111.145538), "mask": "da1f74bc12a7ff81", "tokens": "179947cd23526d04"},
    ("tutorial-text", 0, 1, 7): {"x_start": (-41773.829644, -33.846816), "t": "9771edc0ea14fe63",
        "noise": (-272.554809, -580.509904), "mask": "149e078b1dee2928", "tokens": "d13db6065a54f2e4"},
    ("tutorial-text-clip-stage1", 0, 1, 0): {"x_start": (-83934.273558, -16.102478), "t": "ae198176b81cca6f",
        "noise": (-266.17142, -769.269162), "mask": "d282803a064d69e9", "tokens": "6b4d2003775bdf93",
        "negative_tokens": "12f39ba286f1e63e", "negative_mask": "415a900c133ac6a2"},
    ("tutorial-text-clip-stage1", 0, 1, 7): {"x_start": (-82475.110872, -24.984683), "t": "2cf496c46ba68775",
        "noise": (-305.42674, -455.815436), "mask": "e65ef76caa6a9d46", "tokens": "aafd950e6c93cde4",
        "negative_tokens": "549b0def7a013427", "negative_mask": "83faac8b12de2adb"},
    ("tutorial-text-upsample", 0, 1, 0): {"x_start": (-80672.446047, -8.115197), "t": "60ca2252dbe8f4e7",
        "noise": (-257.519143, 975.424076), "aug_level": "48f317afd35fbad9", "low_res": (-5014.901985, 49.129419),
        "mask": "fe76b999fe5d5d26", "tokens": "8a7df61205549971"},
    ("tutorial-text-upsample", 0, 1, 7): {"x_start": (-70363.399428, -35.379897), "t": "2fb7f59f29b7fe8b",
        "noise": (-314.308893, -601.379153), "aug_level": "ce50e98414034f33", "low_res": (-4369.734165, -81.081694),
        "mask": "5579207d5f175cfe", "tokens": "179ceecd5c7b8147"},
    ("tutorial-text-upsample-noaug", 0, 1, 0): {"x_start": (-80672.446047, -8.115197), "t": "60ca2252dbe8f4e7",
        "noise": (-257.519143, 975.424076), "low_res": (-5042.027872, 51.615352), "mask": "fe76b999fe5d5d26",
        "tokens": "8a7df61205549971"},
    ("tutorial-text-upsample-noaug", 0, 1, 7): {"x_start": (-70363.399428, -35.379897), "t": "2fb7f59f29b7fe8b",
        "noise": (-314.308893, -601.379153), "low_res": (-4397.712448, -87.211552), "mask": "5579207d5f175cfe",
        "tokens": "179ceecd5c7b8147"},
    ("tutorial-text-inpaint-stage1", 0, 1, 0): {"x_start": (-41996.040425, 11.247859), "t": "648582c2920d9350",
        "noise": (-391.095286, 111.145538), "inpaint_image": (-41996.040425, 11.247859),
        "inpaint_mask": (11444.0, 11.0), "mask": "da1f74bc12a7ff81", "tokens": "179947cd23526d04"},
    ("tutorial-text-inpaint-stage1", 0, 1, 7): {"x_start": (-41773.829644, -33.846816), "t": "9771edc0ea14fe63",
        "noise": (-272.554809, -580.509904), "inpaint_image": (-41773.829644, -33.846816),
        "inpaint_mask": (11259.0, 5.0), "mask": "149e078b1dee2928", "tokens": "d13db6065a54f2e4"},
    # The second stages of chapters 4 and 7 (recorded when they were added): the inpainting one differs from its
    # first stage only in which captions are dropped (data.p_uncond 0.5); the varied one draws 80 % two-object scenes
    # (its third stage, tutorial-text-varied, draws the same scenes with train.seed 1).
    ("tutorial-text-inpaint", 0, 1, 0): {"x_start": (-41996.040425, 11.247859), "t": "648582c2920d9350",
        "noise": (-391.095286, 111.145538), "inpaint_image": (-41996.040425, 11.247859),
        "inpaint_mask": (11444.0, 11.0), "mask": "718ba4602469be58", "tokens": "aba2d0ce872973ff"},
    ("tutorial-text-varied-stage2", 0, 1, 0): {"x_start": (-36863.223934, 81.261031), "t": "648582c2920d9350",
        "noise": (-391.095286, 111.145538), "mask": "3439d21919304839", "tokens": "6ca84f80c10bafe9"},
    # Chapter 5's second CLIP stage draws with train.seed 1; chapter 6's third training level differs from the
    # upsampler only in its augmentation levels (data.low_res_aug_max 30).
    ("tutorial-text-clip", 0, 1, 0): {"x_start": (-82928.708923, 1.335172), "t": "0310299e47c51b53",
        "noise": (445.570996, -20.510847), "mask": "345c5b1b23fa4e59", "tokens": "98bdcd4c72802bef",
        "negative_tokens": "1cd5cdd242b8f914", "negative_mask": "6dbe0a7ba7b18573"},
    ("tutorial-text-upsample-lightaug", 0, 1, 0): {"x_start": (-80672.446047, -8.115197), "t": "60ca2252dbe8f4e7",
        "noise": (-257.519143, 975.424076), "aug_level": "5170572dbbbd152e", "low_res": (-5039.206936, 56.572512),
        "mask": "fe76b999fe5d5d26", "tokens": "8a7df61205549971"},
    ("tutorial-text-upsample-inpaint", 0, 1, 0): {"x_start": (-80672.446047, -8.115197), "t": "60ca2252dbe8f4e7",
        "noise": (-257.519143, 975.424076), "aug_level": "48f317afd35fbad9",
        "inpaint_image": (-80672.446047, -8.115197), "inpaint_mask": (20042.0, 48.0),
        "low_res": (-5014.901985, 49.129419), "mask": "fe76b999fe5d5d26", "tokens": "8a7df61205549971"},
    ("tutorial-text-upsample-inpaint", 0, 1, 7): {"x_start": (-70363.399428, -35.379897), "t": "2fb7f59f29b7fe8b",
        "noise": (-314.308893, -601.379153), "aug_level": "ce50e98414034f33",
        "inpaint_image": (-70363.399428, -35.379897), "inpaint_mask": (19647.0, -40.0),
        "low_res": (-4369.734165, -81.081694), "mask": "5579207d5f175cfe", "tokens": "179ceecd5c7b8147"},
    ("tutorial-text-upsample-inpaint", 1, 2, 0): {"x_start": (-41410.404388, 12.946076), "t": "94cf15eb95466c89",
        "noise": (152.111101, -229.959294), "aug_level": "8767405fa20014c6",
        "inpaint_image": (-41410.404388, 12.946076), "inpaint_mask": (10951.0, -28.0),
        "low_res": (-2577.284023, 18.95637), "mask": "57ca186a49dc1a30", "tokens": "066a67f972e92d7d"},
    ("tutorial-text-upsample-inpaint", 1, 2, 7): {"x_start": (-34982.443579, 15.732841), "t": "0ae2d347f7425651",
        "noise": (-37.34948, 652.538373), "aug_level": "942811ac24247d80",
        "inpaint_image": (-34982.443579, 15.732841), "inpaint_mask": (8777.0, -44.0),
        "low_res": (-2172.009745, -71.915804), "mask": "d05284383040b6ba", "tokens": "d4cf4836687a6425"},
    ("tutorial-digits", 1, 2, 0): {"x_start": (-3211.5, 0.203125), "t": "19ba84c42e78e3f2",
        "noise": (-50.633672, -8.963273), "labels": "89bb99101a21d8a1"},
    ("tutorial-digits", 1, 2, 7): {"x_start": (-3185.5, 9.007812), "t": "3a1031df775e5d82",
        "noise": (-58.90297, 235.803163), "labels": "d738a4a40de75460"},
}


def fingerprint(tensor: torch.Tensor) -> str | tuple[float, float]:
    """RECORDED's fingerprint of one tensor."""
    if not tensor.is_floating_point():
        return hashlib.sha256(tensor.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()[:16]
    x = tensor.double().flatten()
    weights = torch.arange(x.numel(), dtype=torch.float64) % 7 - 3
    return round(x.sum().item(), 6), round((x * weights).sum().item(), 6)


@lru_cache(maxsize=None)
def data_only_trainer(name: str) -> Trainer:
    """A Trainer of config `name` with its data, diffusion and rank, but no model: batch() needs nothing else (and
    the inpainting configs would load their init_from checkpoint)."""
    trainer = Trainer.__new__(Trainer)
    trainer.cfg, trainer.device, trainer.rank, trainer.world = load_config(name), torch.device("cpu"), 0, 1
    trainer.diffusion = GaussianDiffusion.from_config(trainer.cfg.diffusion)
    trainer.images, trainer.cond = trainer._load_data()
    trainer.stream = None  # the in-memory datasets
    return trainer


def batch(name: str, step: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    trainer = data_only_trainer(name)
    trainer.rank, trainer.world = rank, world
    try:
        return trainer.batch(step)
    finally:
        trainer.rank, trainer.world = 0, 1


@pytest.mark.parametrize(("name", "rank", "world", "step"), list(RECORDED))
def test_batches_are_the_recorded_ones(name, rank, world, step):
    x_start, t, noise, kwargs = batch(name, step, rank, world)
    tensors = {"x_start": x_start, "t": t, "noise": noise, **kwargs}
    expected = RECORDED[(name, rank, world, step)]
    assert sorted(tensors) == sorted(expected)  # the same inputs
    for key, want in expected.items():
        got = fingerprint(tensors[key])
        if isinstance(want, str):
            assert got == want, key
        else:  # float sums: equal up to the summation order of another CPU
            assert got == pytest.approx(want, rel=1e-9, abs=1e-5), key


@pytest.mark.parametrize("name", ["tutorial-digits", "tutorial-text-clip", "tutorial-text-upsample-inpaint"])
def test_shapes_follow_the_config(name):
    cfg = load_config(name)
    x_start, t, noise, kwargs = batch(name, 3, rank=1, world=2)
    n, channels = cfg.train.batch_size // 2, data_only_trainer(name).images.shape[1]
    side = cfg.data.crop_size or cfg.data.image_size
    assert x_start.shape == noise.shape == (n, channels, side, side) and t.shape == (n,)
    assert 0 <= t.min() and t.max() < cfg.diffusion.num_timesteps
    if cfg.model.super_res:
        low = side * cfg.data.low_res_size // cfg.data.image_size
        assert kwargs["low_res"].shape == (n, channels, low, low)
    if cfg.model.inpaint:
        assert kwargs["inpaint_mask"].shape == (n, 1, side, side)


@pytest.mark.parametrize("name", ["tutorial-digits", "tutorial-text-upsample-inpaint"])
def test_the_ranks_slices_make_the_one_process_batch(name):
    whole = batch(name, 5)
    for world in (2, 4):
        parts = [batch(name, 5, rank, world) for rank in range(world)]
        for i in range(3):
            assert torch.equal(torch.cat([p[i] for p in parts]), whole[i])
        for key, value in whole[3].items():
            assert torch.equal(torch.cat([p[3][key] for p in parts]), value), key


def test_the_upsampler_inputs_are_the_crop_seen_small_noised_at_the_drawn_level():
    cfg = load_config("tutorial-text-upsample-inpaint")
    x_start, _, _, kwargs = batch("tutorial-text-upsample-inpaint", 4)  # step 4 draws one level 0
    levels, low_res = kwargs["aug_level"], kwargs["low_res"]
    clean_low_res = F.avg_pool2d(x_start, cfg.data.image_size // cfg.data.low_res_size)
    assert 0 <= levels.min() and levels.max() <= cfg.data.low_res_aug_max
    clean = levels == 0
    assert clean.sum() == 1
    torch.testing.assert_close(low_res[clean], clean_low_res[clean], rtol=0, atol=1e-6)
    # level s >= 1: sqrt(abar) x_0 + sqrt(1 - abar) eps at chain index s - 1, so the implied eps is N(0, I)
    abar = torch.from_numpy(data_only_trainer(cfg.name).diffusion.alphas_cumprod).float()[levels[~clean] - 1]
    abar = abar.reshape(-1, 1, 1, 1)
    eps = (low_res[~clean] - abar.sqrt() * clean_low_res[~clean]) / (1 - abar).sqrt()
    assert abs(eps.mean().item()) < 0.05 and abs(eps.std().item() - 1) < 0.05
    assert torch.equal(kwargs["inpaint_image"], x_start)
    assert set(kwargs["inpaint_mask"].unique().tolist()) <= {0.0, 1.0}


def test_dropped_captions_are_all_padding_and_dropped_labels_the_null_label():
    _, _, _, kwargs = batch("tutorial-text", 0)
    dropped = ~kwargs["mask"].any(1)
    assert dropped.any() and (kwargs["tokens"][dropped] == 0).all()
    _, _, _, kwargs = batch("tutorial-digits", 0)
    assert (kwargs["labels"] == 10).any() and kwargs["labels"].max() == 10  # 10: the null label of 10 classes


def test_every_mask_kind_a_config_may_name_has_a_maker():
    assert list(MASK_MAKERS) == list(CHOICES["data.mask_kinds"])
