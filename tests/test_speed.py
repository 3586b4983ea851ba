"""Fast sampling settings and `glide-minimal bench released` (glide_minimal/speed.py, glide_minimal/bench.py),
run on the tiny stand-ins for the released models with a couple of steps. The cascade it times is the
pipelines' own (TextPipeline(upsample=True)): there is no second copy."""
from __future__ import annotations

import re

import pytest
import torch

import glide_minimal.pipelines.base as pipeline_base
import glide_minimal.speed as speed
from conftest import randomize_
from glide_minimal.bench import BENCH_PROMPT, bench_released, released_configs, stand_in_cascade
from glide_minimal.cli import main
from glide_minimal.models import build_model
from glide_minimal.pipelines import TextPipeline
from glide_minimal.speed import Settings, prepare

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
    tokens = torch.randint(1, 9, (2, base_cfg.model.text_ctx), generator=torch.Generator().manual_seed(0))
    cond = {"tokens": tokens, "mask": torch.ones_like(tokens, dtype=torch.bool)}
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 900])
    with torch.no_grad():
        reference = base(x, t, **cond)
        fast = prepare(base, Settings("layout only", channels_last=True))(x, t, **cond)
        bf16 = prepare(base, Settings("bf16", dtype=torch.bfloat16, channels_last=True))(x, t, **cond)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)
    assert bf16.dtype == torch.float32  # the diffusion math stays fp32
    assert (bf16 - reference).abs().max() < 0.1 * reference.abs().max()  # bf16: close, not equal


def test_an_optimized_pipeline_samples_what_the_plain_one_does():
    base_cfg, up_cfg = released_configs("tiny")
    plain, fast = (stand_in_cascade(base_cfg, up_cfg, torch.device("cpu")) for _ in range(2))
    fast.optimize(Settings("layout only", channels_last=True))
    fast.upsampler.optimize(Settings("layout only", channels_last=True))
    run = lambda pipe: pipe(BENCH_PROMPT, steps="ddim2", sampler="ddim", upsample=True, upsample_steps="2", seed=0)
    torch.testing.assert_close(run(fast), run(plain), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("upsample_sampler, loop", [("ancestral", "p_sample_loop"), ("ddim", "ddim_sample_loop")])
def test_bench_released_runs_the_pipelines_cascade(upsample_sampler, loop, monkeypatch):
    """What `bench released` times is TextPipeline(upsample=True), with the sampler each setting names, and
    x_T * 0.997 as the upsampler's only temperature (as the release and UpsamplePipeline do)."""
    calls, shapes = [], []
    original_call = TextPipeline.__call__
    monkeypatch.setattr(TextPipeline, "__call__", lambda self, *a, **k: calls.append(k) or original_call(self, *a, **k))
    original_loop = getattr(pipeline_base, loop)
    def spy(diffusion, fn, shape, **kw):
        shapes.append((shape, kw.get("noise")))
        return original_loop(diffusion, fn, shape, **kw)
    monkeypatch.setattr(pipeline_base, loop, spy)
    official = speed.official_settings("2", "2")
    official.upsample_sampler = upsample_sampler
    monkeypatch.setattr("glide_minimal.bench.official_settings", lambda *a: official)
    bench_released("tiny", batch=1, **FEW_STEPS)
    assert [k["upsample"] for k in calls] == [True, True]
    assert calls[0]["upsample_sampler"] == upsample_sampler and calls[0]["steps"] == "2"
    up = [noise for shape, noise in shapes if shape[-1] == 64]
    assert up and up[0] is not None and 0.9 < up[0].std().item() / 0.997 < 1.1


def test_bench_released_times_both_settings_on_the_same_models():
    r = bench_released("tiny", batch=1, **FEW_STEPS)
    official, fast = r["rows"]
    assert (official["setting"], official["precision"], official["layout"]) == ("official", "fp32", "contiguous")
    assert fast["layout"] == "channels_last" and fast["base_steps"] == "ddim2 dpm++2m"
    assert official["base_steps"] == "2 ancestral" and official["upsample_steps"] == "2 ddim"  # the release: DDIM
    assert fast["upsample_steps"] == "ddim2 dpm++2m"
    for key in ("base_forward_s", "upsample_forward_s", "image_s"):
        assert official[key] > 0 and fast[key] > 0
        assert r["ratio"][key] == pytest.approx(official[key] / fast[key])


def test_cli_bench_released_prints_per_forward_and_per_image_times_and_ratio(capsys):
    assert main(["bench", "released", "--scale", "tiny", "--base-steps", "2", "--fast-base-steps", "ddim2",
                 "--upsample-steps", "2", "--fast-upsample-steps", "ddim2", "--repeats", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "TINY stand-ins" in out and "batch 1" in out
    assert re.search(r"^official\s+fp32\s+contiguous\s+no\s+2 ancestral\s+2 ddim(\s+[\d.]+){3}$", out, re.MULTILINE)
    fast_row = r"^fast\s+(bf16|fp32)\s+channels_last\s+no\s+ddim2 dpm\+\+2m\s+ddim2 dpm\+\+2m(\s+[\d.]+){3}$"
    assert re.search(fast_row, out, re.MULTILINE)
    assert re.search(r"^official / fast \(speed-up\)(\s+[\d.]+){3}$", out, re.MULTILINE)
