"""The cascade and editing pipelines (glide_minimal/pipeline.py: TextPipeline(upsample=True), UpsamplePipeline,
InpaintPipeline, load_pipeline's names) and the inpainting helpers of glide_minimal/diffusion/guidance.py.

Tiny random models stand in for the shipped checkpoints: an 8 px text model, an 8 -> 32 px upsampler with
the augmentation-level input, and their inpainting versions, published into a temporary checkpoint folder
under the names load_pipeline("tutorial-inpaint") looks for.
"""
from __future__ import annotations

import re

import pytest
import torch

from conftest import randomize_, tiny_text_config
from glide_minimal import pretrained
from glide_minimal.checkpoint import CheckpointError
from glide_minimal.checks import make_generator
from glide_minimal.diffusion import GaussianDiffusion
from glide_minimal.diffusion.guidance import inpaint_denoised_fn, replacement_model_fn
from glide_minimal.finetune import transfer_weights
from glide_minimal.masks import box_mask
from glide_minimal.models import build_model
from glide_minimal.pipelines import InpaintPipeline, TextPipeline, UpsamplePipeline, load_pipeline

PROMPT = "a large red circle in the center"
BASE = {"model.image_size": 8, "data.image_size": 8, "model.attention_resolutions": [4]}
UPSAMPLER = {"model.image_size": 32, "data.image_size": 32, "model.attention_resolutions": [16],
             "model.super_res": True, "data.low_res_size": 8, "model.aug_level_embed": True, "data.low_res_aug_max": 20,
             "data.low_res_aug_sample": 5, "data.p_uncond": 0.0, "diffusion.sample_respacing": "fast27"}
FAST = dict(steps=3, upsample_steps="4")  # a few steps per stage: the tests check plumbing, not quality


# What the shipped MANIFEST names: the text model's group, and each inpainting model's text model.
COMPANIONS = {"tutorial-text": {"upsample": "tutorial-text-upsample", "inpaint": "tutorial-text-inpaint",
                                "upsample-inpaint": "tutorial-text-upsample-inpaint"},
              "tutorial-text-inpaint": {"text": "tutorial-text"},
              "tutorial-text-upsample-inpaint": {"text": "tutorial-text"}}


def publish_tiny(root, names=("tutorial-text", "tutorial-text-upsample", "tutorial-text-inpaint",
                              "tutorial-text-upsample-inpaint")) -> None:
    """Random models of the four roles, the inpainting ones fine-tuned (transfer_weights) from the others."""
    torch.manual_seed(0)
    models = {}
    for name, overrides in [("tutorial-text", BASE), ("tutorial-text-upsample", UPSAMPLER)]:
        cfg = tiny_text_config(overrides)
        models[name] = (randomize_(build_model(cfg), seed=len(name)), cfg)
        inpaint_cfg = tiny_text_config({**overrides, "model.inpaint": True})
        model = build_model(inpaint_cfg)
        transfer_weights(models[name][0].state_dict(), cfg.model, model)
        models[name.replace("text", "text-inpaint") if name == "tutorial-text" else f"{name}-inpaint"] = (
            randomize_(model, seed=3), inpaint_cfg)
    for name in names:
        model, cfg = models[name]
        pretrained.publish(name, model.state_dict(), cfg.to_dict(), record={"command": "pytest"}, dtype=torch.float32,
                           root=root, companions=COMPANIONS.get(name, {}))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    publish_tiny(root)
    return root


@pytest.fixture(autouse=True)
def _checkpoints(shipped, monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(shipped))


@pytest.fixture(scope="module")
def text(shipped) -> TextPipeline:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(shipped))
        pipe = load_pipeline("tutorial-text", "cpu")
        pipe.upsampler  # loaded now, while the folder is set
    return pipe


@pytest.fixture(scope="module")
def edit(shipped) -> InpaintPipeline:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(shipped))
        pipe = load_pipeline("tutorial-inpaint", "cpu")
        for role in ("inpaint", "upsample-inpaint", "text", "upsample"):
            pipe.stage(role)
    return pipe


def edit_inputs(n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(n, 3, size, size, generator=g)
    mask = torch.stack([box_mask(size, g) for _ in range(n)])
    return image, mask


# -- names -----------------------------------------------------------------------------------------------
def test_companions_are_what_the_manifest_entry_names():
    assert pretrained.companions("tutorial-text") == COMPANIONS["tutorial-text"]
    assert pretrained.companions("tutorial-text-upsample") == {}
    publish_tiny(root := pretrained.checkpoint_dir(), names=())  # nothing new: a re-publish keeps the entry
    assert pretrained.companions("tutorial-text-inpaint", root) == {"text": "tutorial-text"}


def test_companions_are_never_inferred_from_names(tmp_path, monkeypatch):
    """A checkpoint named like another's upsampler is not its upsampler unless the MANIFEST says so."""
    publish_tiny(tmp_path, names=("tutorial-text-upsample",))
    model, cfg = load_pipeline("tutorial-text", "cpu").model, load_pipeline("tutorial-text", "cpu").cfg
    pretrained.publish("tutorial-text", model.state_dict(), cfg.to_dict(), record={"command": "pytest"},
                       dtype=torch.float32, root=tmp_path)  # no companions
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path))
    pipe = load_pipeline("tutorial-text", "cpu")
    with pytest.raises(ValueError, match="upsample=True needs an upsampler, and the MANIFEST entry of "
                                         "'tutorial-text' names no 'upsample' companion"):
        pipe(PROMPT, upsample=True, **FAST)
    pretrained.publish("tutorial-text", model.state_dict(), cfg.to_dict(), record={"command": "pytest"},
                       dtype=torch.float32, root=tmp_path, companions={"upsample": "tutorial-text-upsample"})
    assert load_pipeline("tutorial-text", "cpu")(PROMPT, upsample=True, **FAST).shape == (1, 3, 32, 32)


def test_republishing_keeps_the_companions_unless_new_ones_are_given(tmp_path):
    publish_tiny(tmp_path, names=("tutorial-text",))
    model, cfg = build_model(tiny_text_config(BASE)), tiny_text_config(BASE)
    pretrained.publish("tutorial-text", model.state_dict(), cfg.to_dict(), record={"command": "again"}, root=tmp_path)
    assert pretrained.companions("tutorial-text", tmp_path) == COMPANIONS["tutorial-text"]
    pretrained.publish("tutorial-text", model.state_dict(), cfg.to_dict(), record={"command": "again"}, root=tmp_path,
                       companions={"clip": "my-clip"})
    assert pretrained.companions("tutorial-text", tmp_path) == {"clip": "my-clip"}


def test_load_pipeline_returns_the_pipeline_of_each_role():
    assert isinstance(load_pipeline("tutorial-text-upsample", "cpu"), UpsamplePipeline)
    for name in ("tutorial-inpaint", "tutorial-text-inpaint", "tutorial-text-upsample-inpaint"):
        pipe = load_pipeline(name, "cpu")
        assert isinstance(pipe, InpaintPipeline)
        flags = {role: (pipe.stage(role).cfg.model.super_res, pipe.stage(role).cfg.model.inpaint)
                 for role in InpaintPipeline.ROLES}
        assert flags == {role: spec[1:] for role, spec in InpaintPipeline.ROLES.items()}


def test_inpaint_pipeline_without_its_checkpoints_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path))
    with pytest.raises(CheckpointError, match="the text model whose MANIFEST entry names the 'tutorial-inpaint' group: "
                                              "the checkpoint 'tutorial-text', which is not in"):
        load_pipeline("tutorial-inpaint", "cpu")
    publish_tiny(tmp_path, names=("tutorial-text-inpaint", "tutorial-text"))  # the group's two upsamplers are missing
    edit = load_pipeline("tutorial-inpaint", "cpu")
    with pytest.raises(CheckpointError, match="the checkpoint 'tutorial-text-upsample-inpaint', which is not in"):
        edit.stage("upsample-inpaint")


# -- the cascade -----------------------------------------------------------------------------------------
def test_upsample_returns_the_upsamplers_size_and_follows_the_seed(text):
    a = text([PROMPT, "a small blue square on the left"], upsample=True, seed=0, **FAST)
    assert a.shape == (2, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, text([PROMPT, "a small blue square on the left"], upsample=True, seed=0, **FAST))
    assert not torch.equal(a, text([PROMPT, "a small blue square on the left"], upsample=True, seed=1, **FAST))
    assert text(PROMPT, steps=3).shape == (1, 3, 8, 8)  # upsample=False: the base model alone


def test_upsampler_runs_glides_fast27_from_noise_scaled_by_the_temperature(text, monkeypatch):
    up, calls = text.upsampler, []

    def recording(x_t, t, **kwargs):
        calls.append((x_t.clone(), kwargs))
        return up.model(x_t, t, **kwargs)

    monkeypatch.setattr(up, "model_fn", recording)
    text(PROMPT, upsample=True, steps=2, seed=4)
    assert len(calls) == 27  # upsample_steps="fast27" by default
    expected_noise = torch.randn((1, 3, 32, 32), generator=make_generator(4, torch.device("cpu"))) * 0.997
    assert torch.equal(calls[0][0], expected_noise)
    assert calls[0][1]["low_res"].shape == (1, 3, 8, 8)
    assert calls[0][1]["aug_level"].tolist() == [5]  # the config's data.low_res_aug_sample


def test_the_cascade_samples_its_upsampler_with_ddim_like_the_release(text, monkeypatch):
    """glide-text2im's text2im notebook runs diffusion_up.ddim_sample_loop over fast27 (eta 0)."""
    import glide_minimal.pipelines.base as pipeline

    used = []
    for name in ("ddim_sample_loop", "p_sample_loop"):
        original = getattr(pipeline, name)
        monkeypatch.setattr(pipeline, name, lambda *a, _n=name, _o=original, **k: used.append(_n) or _o(*a, **k))
    text(PROMPT, upsample=True, steps=2, upsample_steps="3", seed=0)
    assert used == ["p_sample_loop", "ddim_sample_loop"]  # base: ancestral (its default); upsampler: DDIM


def test_aug_level_noises_the_low_res_input_and_is_passed_to_the_model(text, monkeypatch):
    up, seen = text.upsampler, []
    monkeypatch.setattr(up, "model_fn", lambda x_t, t, **kw: seen.append(kw) or up.model(x_t, t, **kw))
    low = torch.rand(1, 3, 8, 8) * 2 - 1
    up.upsample(low, [PROMPT], steps="2", aug_level=0)
    up.upsample(low, [PROMPT], steps="2", aug_level=20)
    assert torch.equal(seen[0]["low_res"], low) and seen[0]["aug_level"].tolist() == [0]
    assert not torch.equal(seen[2]["low_res"], low) and seen[2]["aug_level"].tolist() == [20]
    for bad in (-1, 51, 2.5):
        with pytest.raises(ValueError, match=re.escape("aug_level must be a whole number of forward steps in 0..50")):
            up.upsample(low, [PROMPT], steps="2", aug_level=bad)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_upsample_pipeline_takes_low_res_images_in_unit_range(sampler):
    up = load_pipeline("tutorial-text-upsample", "cpu")
    out = up(PROMPT, low_res=torch.rand(2, 3, 8, 8), steps="3", sampler=sampler, seed=0)
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="got 3 prompts for 2 low-res images"):
        up([PROMPT] * 3, low_res=torch.rand(2, 3, 8, 8), steps="3")
    with pytest.raises(ValueError, match=re.escape("low_res values must lie in [0, 1]; got min -1")):
        up(PROMPT, low_res=torch.full((1, 3, 8, 8), -1.0), steps="3")


def test_upsample_without_an_upsampler_checkpoint_names_it(tmp_path, monkeypatch):
    publish_tiny(tmp_path, names=("tutorial-text",))
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path))
    pipe = load_pipeline("tutorial-text", "cpu")
    with pytest.raises(CheckpointError, match="the checkpoint 'tutorial-text-upsample', which is not in any of the "
                                              "places searched .*train_ch"):
        pipe(PROMPT, upsample=True, steps=2)
    with pytest.raises(ValueError, match="unknown upsample_sampler 'plms'; choose one of: ancestral, ddim"):
        load_pipeline("tutorial-text", "cpu")(PROMPT, upsample=True, upsample_sampler="plms")


# -- editing ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["model", "replace"])
def test_edit_keeps_the_kept_region_exactly_and_follows_the_seed(edit, method):
    image, mask = edit_inputs()
    out, low = edit(PROMPT, image, mask, method=method, seed=0, return_low_res=True, **FAST)
    keep = mask.expand_as(image) > 0.5
    assert out.shape == (2, 3, 32, 32) and low.shape == (2, 3, 8, 8) and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out[keep], image[keep])
    assert (out[~keep] - image[~keep]).abs().mean() > 0.01  # the fill region was generated, not copied
    assert torch.equal(out, edit(PROMPT, image, mask, method=method, seed=0, **FAST))
    assert not torch.equal(out, edit(PROMPT, image, mask, method=method, seed=1, **FAST))


def test_model_and_replace_use_their_own_models(tmp_path, monkeypatch):
    publish_tiny(tmp_path, names=("tutorial-text", "tutorial-text-upsample"))
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path))
    pipe = load_pipeline("tutorial-inpaint", "cpu")
    image, mask = edit_inputs(1)
    assert pipe(PROMPT, image, mask, method="replace", **FAST).shape == (1, 3, 32, 32)
    with pytest.raises(CheckpointError, match="base inpainting model .*'tutorial-text-inpaint', which is not in any "
                                              "of the places searched .*train_ch"):
        pipe(PROMPT, image, mask, method="model", **FAST)


def test_all_fill_mask_is_text_to_image(edit):
    image, _ = edit_inputs(1)
    out = edit(PROMPT, image, torch.zeros(1, 1, 32, 32), **FAST)
    assert out.shape == (1, 3, 32, 32) and (out - image).abs().mean() > 0.01


def bad_inputs():
    image, mask = edit_inputs()
    return [
        (dict(image=torch.rand(2, 3, 16, 16)),
         re.escape("image has shape (2, 3, 16, 16); this pipeline edits [N, 3, 32, 32]")),
        (dict(image=image * 2 - 1), re.escape("image values must lie in [0, 1]; got min -")),
        (dict(image=(image * 255).to(torch.uint8)),
         "image must be a float tensor in \\[0, 1\\], got dtype torch.uint8"),
        (dict(mask=mask[:, :, ::2, ::2]), re.escape("mask has shape (2, 1, 16, 16) but the image is (2, 3, 32, 32); "
                                                    "the mask must be [2, 1, 32, 32] with 1 = keep, 0 = fill")),
        (dict(mask=mask * 0.5), "mask must be binary \\(1 = keep, 0 = fill\\); found the value 0.5"),
        (dict(mask=torch.cat([mask[:1], torch.ones_like(mask[:1])])),
         "mask 1 keeps every pixel, so there is nothing to fill"),
        (dict(prompt=[PROMPT] * 3), "got 3 prompts for 2 images"),
        (dict(method="paint"), "unknown method 'paint'; choose one of: model, replace"),
    ]


@pytest.mark.parametrize("index", range(len(bad_inputs())))
def test_bad_edit_inputs_are_clear_errors(edit, index):
    image, mask = edit_inputs()
    change, message = bad_inputs()[index]
    args = {"prompt": PROMPT, "image": image, "mask": mask, **change}
    with pytest.raises(ValueError, match=message):
        edit(args.pop("prompt"), args.pop("image"), args.pop("mask"), **args, **FAST)


# -- the inpainting helpers ------------------------------------------------------------------------------
def test_inpaint_denoised_fn_puts_the_known_pixels_into_x0():
    image, mask = torch.rand(2, 3, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    pred = torch.randn(2, 3, 4, 4)
    out = inpaint_denoised_fn(image, mask)(pred)
    keep = mask.expand_as(pred) > 0.5
    assert torch.equal(out[keep], image[keep]) and torch.equal(out[~keep], pred[~keep])


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_known_region_enforcement_alone_ends_on_the_known_pixels(edit, sampler):
    """Without the final copy, the sampler's own output already has the known pixels (to float rounding)."""
    base = edit.stage("inpaint")
    image, mask = edit_inputs(2, size=8)
    x = image * 2 - 1
    kwargs = {**base.tokens([PROMPT] * 2), "inpaint_image": x, "inpaint_mask": mask}
    out = base.sample(2, steps=5, sampler=sampler, model_kwargs=kwargs, denoised_fn=inpaint_denoised_fn(x, mask))
    keep = mask.expand_as(x) > 0.5
    torch.testing.assert_close(out[keep], x[keep], rtol=0, atol=1e-5)


def test_replacement_shows_the_model_q_sample_of_the_known_region():
    diffusion = GaussianDiffusion.from_config(tiny_text_config().diffusion)
    image, mask = torch.rand(2, 3, 4, 4) * 2 - 1, (torch.rand(2, 1, 4, 4) > 0.5).float()
    x_t, t, seen = torch.randn(2, 3, 4, 4), torch.tensor([10, 40]), []
    wrapped = replacement_model_fn(lambda x, t, **kw: seen.append((x, kw)) or x, diffusion, image, mask,
                                   torch.Generator().manual_seed(3))
    wrapped(x_t, t, tokens="passed through")
    expected = diffusion.q_sample(image, t, generator=torch.Generator().manual_seed(3))
    keep = mask.expand_as(x_t) > 0.5
    shown, kwargs = seen[0]
    assert torch.equal(shown[keep], expected[keep]) and torch.equal(shown[~keep], x_t[~keep])
    assert kwargs == {"tokens": "passed through"}


def test_cli_samples_the_cascade_and_refuses_image_pipelines(tmp_path, capsys):
    from glide_minimal.cli import main

    out = tmp_path / "grid.png"
    assert main(["sample", "--pipeline", "tutorial-text", "--prompt", PROMPT, "--num-images", "2", "--steps", "2",
                 "--upsample", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    assert out.exists() and "2 images of (3, 32, 32)" in capsys.readouterr().out
    assert main(["sample", "--pipeline", "tutorial-inpaint", "--prompt", PROMPT, "--out", str(out),
                 "--device", "cpu"]) == 2
    assert "takes images as well as prompts" in capsys.readouterr().err


@pytest.mark.parametrize("inpaint", [False, True])
def test_cascade_diagram_labels_each_stage_with_its_configs_sizes(inpaint):
    import matplotlib

    matplotlib.use("Agg")
    from glide_minimal.config import load_config
    from glide_minimal.viz import cascade_diagram

    suffix = "-inpaint" if inpaint else ""
    base, up = load_config(f"tutorial-text{suffix}"), load_config(f"tutorial-text-upsample{suffix}")
    ax = cascade_diagram(base, up, base_steps=50, guidance_scale=4.0)
    text = "\n".join(t.get_text() for t in ax.texts)
    params = sum(p.numel() for p in build_model(up, device="meta").parameters()) / 1e6
    assert f"{params:.2f} M parameters" in text and "50 steps, CFG scale 4" in text
    assert f"{up.data.low_res_aug_sample} forward" in text
    assert (f"{10 if inpaint else 6} input channels") in text
    assert ("image*mask" in text) == inpaint


# -- DPM-Solver++(2M) through every pipeline ------------------------------------------------------------
def test_dpm_solver_runs_the_cascade_with_cfg_and_the_upsampler(text, monkeypatch):
    import glide_minimal.pipelines.base as pipeline

    used = []
    original = pipeline.dpm_solver_sample_loop
    monkeypatch.setattr(pipeline, "dpm_solver_sample_loop", lambda *a, **k: used.append(a[2]) or original(*a, **k))
    out = text(PROMPT, steps=4, sampler="dpm++2m", upsample=True, upsample_steps="3", upsample_sampler="dpm++2m",
               guidance_scale=3.0, seed=0)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    assert used == [(1, 3, 8, 8), (1, 3, 32, 32)]  # the base model (CFG-wrapped), then the upsampler
    assert torch.equal(out, text(PROMPT, steps=4, sampler="dpm++2m", upsample=True, upsample_steps="3",
                                 upsample_sampler="dpm++2m", guidance_scale=3.0, seed=0))


@pytest.mark.parametrize("method", ["model", "replace"])
def test_dpm_solver_edits_and_keeps_the_known_region(edit, method):
    image, mask = edit_inputs(1)
    out = edit(PROMPT, image, mask, method=method, sampler="dpm++2m", upsample_sampler="dpm++2m", **FAST)
    keep = mask.expand_as(image) > 0.5
    assert torch.equal(out[keep], image[keep]) and torch.isfinite(out).all()


def test_dpm_solver_refuses_gradient_guidance_and_eta_before_any_work(text):
    with pytest.raises(ValueError, match=r"sampler='dpm\+\+2m' cannot follow a guidance gradient \(CLIP or "
                                         r"classifier guidance\); use one of: ancestral, ddim"):
        text(PROMPT, guidance="clip", sampler="dpm++2m", steps=3)
    with pytest.raises(ValueError, match=r"eta=0.5 is DDIM's noise; sampler='dpm\+\+2m' takes no eta"):
        text(PROMPT, sampler="dpm++2m", eta=0.5, steps=3)
    with pytest.raises(ValueError, match=r"upsample_sampler 'euler'; choose one of: ancestral, ddim, dpm\+\+2m"):
        text(PROMPT, upsample=True, upsample_sampler="euler", steps=3)


# -- sketch edits (SDEdit) -------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpm++2m"])
def test_strength_runs_only_the_lower_part_of_the_chain_from_the_noised_init(text, sampler, monkeypatch):
    base = text
    init = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    seen = []
    model_fn = base.model_fn
    monkeypatch.setattr(base, "model_fn", lambda x, t, **kw: (seen.append(int(t[0])), model_fn(x, t, **kw))[1])
    base.sample(2, steps=10, sampler=sampler, seed=0, init=init, strength=0.3, model_kwargs=base.tokens([""] * 2))
    chain = base.diffusion(10)
    assert [int(chain.timestep_map[i]) for i in (2, 1, 0)] == seen  # 0.3 of 10 steps: indices 2, 1, 0
    seen.clear()
    full = base.sample(2, steps=10, sampler=sampler, seed=0, model_kwargs=base.tokens([""] * 2))
    assert len(seen) == 10
    seen.clear()
    same = base.sample(2, steps=10, sampler=sampler, seed=0, init=init, strength=1.0,
                       model_kwargs=base.tokens([""] * 2))
    assert torch.equal(full, same)  # strength 1 is ordinary sampling: init unused


def test_a_small_strength_keeps_the_sketch_and_a_large_one_does_not(edit):
    image, _ = edit_inputs(2)
    fill = torch.zeros(2, 1, 32, 32)
    fill[..., 8:24, 8:24] = 1  # keep a frame, fill the middle
    mask = 1 - fill
    light = edit(PROMPT, image, mask, strength=0.1, **FAST)
    heavy = edit(PROMPT, image, mask, strength=1.0, **FAST)
    hole = (1 - mask).expand_as(image) > 0.5
    assert (light[hole] - image[hole]).abs().mean() < (heavy[hole] - image[hole]).abs().mean()


@pytest.mark.parametrize("strength", [0, -0.5, 1.5, float("nan")])
def test_strength_outside_0_1_is_a_clear_error(edit, strength):
    image, mask = edit_inputs(1)
    with pytest.raises(ValueError, match=r"strength must be (a finite number )?in \(0, 1\], got"):
        edit(PROMPT, image, mask, strength=strength, **FAST)


def test_start_outside_the_chain_is_a_clear_error():
    from glide_minimal.diffusion.sampling import p_sample_loop

    chain = GaussianDiffusion.from_config(tiny_text_config().diffusion, "5")
    with pytest.raises(ValueError, match=r"start must be a chain index in 0..4 \(this chain has 5 steps\), got 7"):
        p_sample_loop(chain, lambda x, t: torch.zeros(1, 6, 8, 8), (1, 3, 8, 8), start=7)
