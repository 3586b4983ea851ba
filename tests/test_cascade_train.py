"""Training data of the cascade and editing models (chapters 6-7): the config keys, the upsampler's paired
low-res input (cropped, noise-augmented), inpainting masks, and exact resume with the new random draws
(glide_minimal/config.py, glide_minimal/conditioning.py, Trainer.batch in glide_minimal/train.py)."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_same_tensors, straight_and_resumed, tiny_text_config
from glide_minimal.conditioning import augment_low_res, random_masks, step_generator
from glide_minimal.config import load_config
from glide_minimal.datasets import load_shapesworld
from glide_minimal.diffusion import GaussianDiffusion
from glide_minimal.train import Trainer

# A 16 px "upsampler" from 4 px: the smallest ShapesWorld pair with the 4x factor of GLIDE.
UP = {"model.super_res": True, "data.low_res_size": 4}
AUG = {**UP, "model.aug_level_embed": True, "data.low_res_aug_max": 20}


@pytest.fixture(scope="module")
def up_trainer(tmp_path_factory) -> Trainer:
    return Trainer(tiny_text_config(UP), tmp_path_factory.mktemp("up"), progress=False)


# -- config ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "message"), [
    ({"data.low_res_size": 4}, "data.low_res_size is for super-resolution models"),
    ({"data.low_res_aug_max": 10}, "data.low_res_aug_max is for super-resolution models"),
    ({"model.aug_level_embed": True},
     "model.aug_level_embed embeds the low-res noise-augmentation level: it needs model.super_res"),
    ({**UP, "data.low_res_size": 5}, "data.low_res_size 5 must divide model.image_size 16"),
    ({**UP, "data.low_res_size": 16}, "data.low_res_size 16 must divide model.image_size 16 and be smaller"),
    ({**UP, "data.low_res_aug_max": 51}, re.escape("data.low_res_aug_max must be a number of forward steps in 0..50")),
    ({**UP, "data.crop_size": 6}, "data.crop_size 6 must be at most model.image_size \\(16\\) and a multiple of 4"),
    ({"data.crop_size": 32}, "data.crop_size 32 must be at most model.image_size \\(16\\)"),
    ({"model.inpaint": True, "data.mask_kinds": ["box", "blob"]}, "choose one or more of: box, freeform"),
])
def test_bad_cascade_keys_name_the_key_and_the_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_text_config(overrides)


def test_crops_are_for_diffusion_models_and_init_from_not_for_classifiers():
    with pytest.raises(ValueError, match="data.crop_size is for diffusion models"):
        load_config("tutorial-digits-classifier", overrides={"data.crop_size": 8})
    with pytest.raises(ValueError, match="train.init_from fine-tunes a diffusion model or continues a CLIP"):
        load_config("tutorial-digits-classifier", overrides={"train.init_from": "tutorial-digits"})


def test_tutorial_cascade_configs_follow_glide_and_cascaded_diffusion():
    up = load_config("tutorial-text-upsample")
    assert (up.model.image_size, up.data.low_res_size) == (64, 16)  # GLIDE's 4x
    # the base model's cosine schedule at 64 px (the released 256 px upsampler's linear one leaves the last
    # third of a 64 px chain nearly pure noise); GLIDE's fast27 respacing for sampling
    assert up.diffusion.noise_schedule == "squaredcos_cap_v2" and up.diffusion.sample_respacing == "fast27"
    assert up.diffusion.model_mean_type == "v" and load_config("tutorial-text").diffusion.model_mean_type == "eps"
    assert load_config("glide-filtered-upsample").diffusion.noise_schedule == "linear"
    assert up.model.learn_sigma and up.model.text_ctx > 0
    assert up.model.aug_level_embed and up.data.low_res_aug_max > 0 and 0 < up.data.crop_size < 64
    assert not load_config("tutorial-text-upsample-noaug").data.low_res_aug_max
    # chapter 7's base model goes on from a first stage (exported into runs/ by scripts/train_ch7.sh)
    stage2, stage1 = load_config("tutorial-text-inpaint"), load_config("tutorial-text-inpaint-stage1")
    assert stage2.train.init_from.endswith("/tutorial-text-inpaint-stage1.safetensors")
    assert stage2.model == stage1.model and stage2.data.p_uncond > stage1.data.p_uncond
    for name, source in [("tutorial-text-inpaint-stage1", "tutorial-text"),
                         ("tutorial-text-upsample-inpaint", "tutorial-text-upsample"),
                         ("tutorial-text-inpaint-gpu", "tutorial-text-gpu"),
                         ("tutorial-text-upsample-inpaint-gpu", "tutorial-text-upsample-gpu")]:
        cfg, base = load_config(name), load_config(source)
        assert cfg.model.inpaint and cfg.train.init_from == source
        assert cfg.model == type(cfg.model)(**{**vars(base.model), "inpaint": True})  # the source's network + inputs
    for name in ("glide-filtered-upsample", "glide-filtered-upsample-inpaint", "glide-paper-upsample"):
        assert not load_config(name).model.aug_level_embed  # the released upsampler has no augmentation input


# -- the upsampler's low-res input ---------------------------------------------------------------------------
def test_low_res_is_the_area_average_of_x_start_and_the_4px_render(up_trainer):
    x_start, _, _, kwargs = up_trainer.batch(0)
    assert kwargs["low_res"].shape == (8, 3, 4, 4) and "aug_level" not in kwargs
    torch.testing.assert_close(kwargs["low_res"], F.avg_pool2d(x_start, 4), rtol=0, atol=1e-6)
    renders, _ = load_shapesworld(4)  # the same scenes in the same order, rendered at 4 px
    idx = torch.randint(len(renders), (8,), generator=step_generator(0, 0))
    torch.testing.assert_close(kwargs["low_res"], renders[idx], rtol=0, atol=1e-6)


def test_crops_come_with_the_matching_low_res_crop(tmp_path):
    trainer = Trainer(tiny_text_config({**UP, "data.crop_size": 8}), tmp_path, progress=False)
    corners = set()
    for step in range(3):
        x_start, _, noise, kwargs = trainer.batch(step)
        assert x_start.shape == noise.shape == (8, 3, 8, 8) and kwargs["low_res"].shape == (8, 3, 2, 2)
        torch.testing.assert_close(kwargs["low_res"], F.avg_pool2d(x_start, 4), rtol=0, atol=1e-6)
        idx = torch.randint(len(trainer.images), (8,), generator=step_generator(0, step))
        for img, full in zip(x_start, trainer.images[idx]):  # each crop is a window of its image, on the 4 px grid
            hits = [(y, x) for y in range(0, 9, 4) for x in range(0, 9, 4)
                    if torch.equal(full[:, y:y + 8, x:x + 8], img)]
            assert hits, "a crop is no window of its training image on the low-res grid"
            corners.add(hits[0])
    assert len(corners) > 1  # the corners vary


def test_noise_augmentation_is_q_sample_at_the_drawn_level(tmp_path):
    trainer = Trainer(tiny_text_config({**AUG, "train.batch_size": 64}), tmp_path, progress=False)
    x_start, _, _, kwargs = trainer.batch(0)
    levels, clean = kwargs["aug_level"], F.avg_pool2d(x_start, 4)
    assert levels.shape == (64,) and 0 <= levels.min() and levels.max() <= 20 and len(levels.unique()) > 5
    zero = levels == 0
    assert torch.equal(kwargs["low_res"][zero], clean[zero])  # level 0: the clean image
    # level s >= 1: sqrt(abar) x_0 + sqrt(1 - abar) eps at chain index s - 1, so the implied eps is N(0, I)
    noisy = ~zero
    abar = torch.from_numpy(trainer.diffusion.alphas_cumprod).float()[levels[noisy] - 1].reshape(-1, 1, 1, 1)
    eps = (kwargs["low_res"][noisy] - abar.sqrt() * clean[noisy]) / (1 - abar).sqrt()
    assert abs(eps.mean().item()) < 0.1 and abs(eps.std().item() - 1) < 0.1


def test_augment_low_res_keeps_level_zero_and_noises_the_rest():
    diffusion = GaussianDiffusion.from_config(tiny_text_config().diffusion)
    low, noise = torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4)
    out = augment_low_res(diffusion, low, torch.tensor([0, 1, 50]), noise)
    assert torch.equal(out[0], low[0])
    torch.testing.assert_close(out[1:], diffusion.q_sample(low[1:], torch.tensor([0, 49]), noise[1:]))


# -- inpainting masks ----------------------------------------------------------------------------------------
def test_inpaint_batches_carry_x_start_and_a_per_step_mask(tmp_path):
    trainer = Trainer(tiny_text_config({"model.inpaint": True}), tmp_path, progress=False)
    x_start, _, _, kwargs = trainer.batch(5)
    mask = kwargs["inpaint_mask"]
    assert torch.equal(kwargs["inpaint_image"], x_start) and mask.shape == (8, 1, 16, 16)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert (mask.flatten(1).min(1).values == 0).all()  # every example has something to fill
    assert torch.equal(trainer.batch(5)[3]["inpaint_mask"], mask)  # a function of (seed, step)
    assert not torch.equal(trainer.batch(6)[3]["inpaint_mask"], mask)


def test_mask_kinds_choose_the_masks():
    boxes = random_masks(range(12), 16, ("box",), seed=0, step=0)
    for m in boxes:  # a box: the fill region is its own bounding rectangle
        ys, xs = (m[0] == 0).nonzero(as_tuple=True)
        assert (m[0, ys.min():ys.max() + 1, xs.min():xs.max() + 1] == 0).all()
    strokes = random_masks(range(12), 16, ("freeform",), seed=0, step=0)
    assert not torch.equal(boxes, strokes)


def test_each_process_draws_its_slice_of_the_global_batch(tmp_path):
    """Crops, augmentation levels and masks of two ranks concatenate to the one-process batch."""
    cfg = tiny_text_config({**AUG, "model.inpaint": True, "data.crop_size": 8})
    trainer = Trainer(cfg, tmp_path, progress=False)
    whole = trainer.batch(2)
    parts = []
    for rank in (0, 1):
        trainer.world, trainer.rank = 2, rank
        parts.append(trainer.batch(2))
    for i in range(3):
        assert torch.equal(torch.cat([parts[0][i], parts[1][i]]), whole[i])
    for key in whole[3]:
        assert torch.equal(torch.cat([parts[0][3][key], parts[1][3][key]]), whole[3][key]), key


def test_configs_without_cascade_keys_draw_what_they_drew_before(tmp_path):
    """The new draws come after the old ones: a text model's batch is unchanged, so old runs resume exactly."""
    trainer = Trainer(tiny_text_config(), tmp_path, progress=False)
    x_start, t, noise, kwargs = trainer.batch(3)
    g = step_generator(0, 3)
    idx = torch.randint(len(trainer.images), (8,), generator=g)
    assert torch.equal(t, torch.randint(50, (8,), generator=g))
    assert torch.equal(noise, torch.randn((8, 3, 16, 16), generator=g))
    assert torch.equal(x_start, trainer.images[idx]) and set(kwargs) == {"tokens", "mask"}


def test_resume_is_exact_with_crops_augmentation_and_masks(tmp_path):
    cfg = tiny_text_config({**AUG, "model.inpaint": True, "data.crop_size": 8, "model.dropout": 0.1,
                            "train.max_steps": 4, "train.ckpt_every": 100})
    straight, split, meta = straight_and_resumed(cfg, tmp_path, stop_at=2)
    assert meta["step"] == 4
    assert_same_tensors(split, straight)


def test_unet_takes_crops_but_not_sizes_it_cannot_halve():
    from glide_minimal.models import build_model

    cfg = tiny_text_config(UP)  # channel_mult [1, 2]: one halving
    model, tokens = build_model(cfg), torch.zeros(1, 12, dtype=torch.long)
    t, mask = torch.zeros(1, dtype=torch.long), torch.zeros(1, 12, dtype=torch.bool)
    out = model(torch.zeros(1, 3, 8, 8), t, tokens=tokens, mask=mask, low_res=torch.zeros(1, 3, 2, 2))
    assert out.shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match=re.escape("(1, 3, 7, 7) but this U-Net takes [N, 3, 16, 16] "
                                                   "(model.image_size), or crops whose sides are multiples of 2")):
        model(torch.zeros(1, 3, 7, 7), t, tokens=tokens, mask=mask, low_res=torch.zeros(1, 3, 2, 2))


def test_info_counts_the_inpainting_upsamplers_extra_input_channels(capsys):
    from glide_minimal.cli import main
    from glide_minimal.config import load_config

    counts = []
    for name in ("tutorial-text-upsample", "tutorial-text-upsample-inpaint"):
        assert main(["info", "--config", name]) == 0
        counts.append(int(re.search(r"parameters\s+([\d,]+)", capsys.readouterr().out).group(1).replace(",", "")))
    # The same network with more inputs: the known image and the mask (in_channels + 1) enter the first
    # 3x3 conv, which gains in_channels + 1 input channels of model_channels filters each.
    m = load_config("tutorial-text-upsample-inpaint").model
    assert counts[1] - counts[0] == (m.in_channels + 1) * m.model_channels * 3 * 3 > 0
