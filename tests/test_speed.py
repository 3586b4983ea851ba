"""Fast sampling settings and `glide-minimal bench released` (glide_minimal/speed.py, glide_minimal/bench.py),
run on the tiny stand-ins for the released models with a couple of steps."""
from __future__ import annotations

import re

import pytest
import torch

from conftest import randomize_
from glide_minimal.bench import bench_released, released_configs
from glide_minimal.cli import main
from glide_minimal.models import build_model
from glide_minimal.speed import Settings, caption_inputs, cascade, prepare

FEW_STEPS = dict(base_steps="2", fast_base_steps="ddim2", upsample_steps="2", fast_upsample_steps="ddim2", repeats=1,
                 device="cpu")


def tiny_models():
    base_cfg, up_cfg = released_configs("tiny")
    torch.manual_seed(0)
    return base_cfg, up_cfg, randomize_(build_model(base_cfg).eval()), randomize_(build_model(up_cfg).eval())


def test_tiny_stand_ins_keep_the_released_structure():
    base_cfg, up_cfg = released_configs("tiny")
    assert base_cfg.model.text_ctx and base_cfg.model.learn_sigma and not base_cfg.model.super_res
    assert up_cfg.model.super_res and up_cfg.model.image_size == 4 * base_cfg.model.image_size
    assert up_cfg.diffusion.noise_schedule == "linear" and base_cfg.diffusion.noise_schedule == "squaredcos_cap_v2"
    with pytest.raises(ValueError, match=r"scale 'huge' is not valid; choose one of: full, tiny"):
        released_configs("huge")


def test_channels_last_fp32_gives_the_same_output():
    base_cfg, _, base, _ = tiny_models()
    cond, _ = caption_inputs(base_cfg, 2, torch.device("cpu"))
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 900])
    with torch.no_grad():
        reference = base(x, t, **cond)
        fast = prepare(base, Settings("layout only", channels_last=True))(x, t, **cond)
        bf16 = prepare(base, Settings("bf16", dtype=torch.bfloat16, channels_last=True))(x, t, **cond)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)
    assert bf16.dtype == torch.float32  # the diffusion math stays fp32
    assert (bf16 - reference).abs().max() < 0.1 * reference.abs().max()  # bf16: close, not equal


@pytest.mark.parametrize("upsample_sampler, loop", [("ancestral", "p_sample_loop"), ("ddim", "ddim_sample_loop")])
def test_cascade_returns_upsampled_images_with_either_upsampler_sampler(upsample_sampler, loop, monkeypatch):
    import glide_minimal.speed as speed

    base_cfg, up_cfg, base, upsampler = tiny_models()
    cond, uncond = caption_inputs(base_cfg, 2, torch.device("cpu"))
    settings = Settings("few", base_steps="ddim2", upsample_steps="2", upsample_sampler=upsample_sampler)
    calls = []
    original = getattr(speed, loop)
    monkeypatch.setattr(speed, loop, lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    images = cascade(prepare(base, settings), prepare(upsampler, settings), base_cfg, up_cfg, settings, cond, uncond)
    assert images.shape == (2, 3, 64, 64) and torch.isfinite(images).all()
    assert (2, 3, 64, 64) in calls  # the upsampler ran with the loop its steps name


def test_bench_released_times_both_settings_on_the_same_models():
    r = bench_released("tiny", batch=1, **FEW_STEPS)
    official, fast = r["rows"]
    assert (official["setting"], official["precision"], official["layout"]) == ("official", "fp32", "contiguous")
    assert fast["layout"] == "channels_last" and fast["base_steps"] == "ddim2 ddim"
    assert official["base_steps"] == "2 ancestral" and official["upsample_steps"] == "2 ddim"  # the release: DDIM
    assert fast["upsample_steps"] == "ddim2 ddim"
    for key in ("base_forward_s", "upsample_forward_s", "image_s"):
        assert official[key] > 0 and fast[key] > 0
        assert r["ratio"][key] == pytest.approx(official[key] / fast[key])


def test_cli_bench_released_prints_per_forward_and_per_image_times_and_ratio(capsys):
    assert main(["bench", "released", "--scale", "tiny", "--base-steps", "2", "--fast-base-steps", "ddim2",
                 "--upsample-steps", "2", "--fast-upsample-steps", "ddim2", "--repeats", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "TINY stand-ins" in out and "batch 1" in out
    assert re.search(r"^official\s+fp32\s+contiguous\s+no\s+2 ancestral\s+2 ddim(\s+[\d.]+){3}$", out, re.MULTILINE)
    assert re.search(r"^fast\s+(bf16|fp32)\s+channels_last\s+no\s+ddim2 ddim\s+ddim2 ddim(\s+[\d.]+){3}$", out, re.MULTILINE)
    assert re.search(r"^official / fast \(speed-up\)(\s+[\d.]+){3}$", out, re.MULTILINE)


def test_cascade_scales_only_the_upsamplers_starting_noise_by_the_temperature(monkeypatch):
    """One meaning of the 0.997 temperature, as in the release and UpsamplePipeline: x_T * 0.997."""
    import glide_minimal.speed as speed

    base_cfg, up_cfg, base, upsampler = tiny_models()
    cond, uncond = caption_inputs(base_cfg, 2, torch.device("cpu"))
    seen = {}
    original = speed.ddim_sample_loop
    def spy(diffusion, fn, shape, **kw):
        if shape[-1] == up_cfg.model.image_size:
            seen.update(kw)
        return original(diffusion, fn, shape, **kw)
    monkeypatch.setattr(speed, "ddim_sample_loop", spy)
    settings = Settings("few", base_steps="ddim2", upsample_steps="2")
    cascade(prepare(base, settings), prepare(upsampler, settings), base_cfg, up_cfg, settings, cond, uncond, seed=5)
    assert "temperature" not in seen and seen["noise"] is not None
    assert 0.9 < seen["noise"].std().item() / 0.997 < 1.1
