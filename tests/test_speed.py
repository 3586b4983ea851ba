"""Fast sampling settings and `glide-minimal bench released` (glide_minimal/speed.py, glide_minimal/bench.py),
run on the tiny stand-ins for the released models with a couple of steps. The cascade it times is the
pipelines' own (TextPipeline(upsample=True)): there is no second copy."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
    fastest = min(r["measured"], key=lambda label: sum(r["measured"][label]))  # what measure_fast_settings picks
    assert f"{fast['precision']} {fast['layout']}" == fastest and fast["base_steps"] == "ddim2 dpm++2m"
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
    fast_row = (r"^fast\s+(bf16|fp32)\s+(channels_last|contiguous)\s+no\s+ddim2 dpm\+\+2m\s+ddim2 dpm\+\+2m"
                r"(\s+[\d.]+){3}$")
    assert re.search(fast_row, out, re.MULTILINE)
    assert re.search(r"^official / fast \(speed-up\)(\s+[\d.]+){3}$", out, re.MULTILINE)
    assert len(re.findall(r"^  fp32 (contiguous|channels_last) +[\d.]+ \+ [\d.]+", out, re.MULTILINE)) == 2
    assert out.count("<- fastest, used above") == 1


def test_bench_released_without_measuring_uses_fast_settings_as_they_are():
    r = bench_released("tiny", batch=1, measure=False, **FEW_STEPS)
    assert r["measured"] == {} and r["rows"][1]["layout"] == "channels_last"


def stand_in_stages():
    """(model, args, kwargs) of the tiny base (a CFG batch of 2) and upsampler (batch 1), for one forward each."""
    base_cfg, up_cfg, base, up = tiny_models()
    g = torch.Generator().manual_seed(0)
    tokens = {"tokens": torch.randint(1, 9, (2, base_cfg.model.text_ctx), generator=g)}
    tokens["mask"] = torch.ones_like(tokens["tokens"], dtype=torch.bool)
    s, s_up = base_cfg.model.image_size, up_cfg.model.image_size
    up_kwargs = {"tokens": tokens["tokens"][:1], "mask": tokens["mask"][:1],
                 "low_res": torch.randn(1, 3, s, s, generator=g)}
    return [(base, (torch.randn(2, 3, s, s, generator=g), torch.tensor([10, 10])), tokens),
            (up, (torch.randn(1, 3, s_up, s_up, generator=g), torch.tensor([10])), up_kwargs)]


def test_measure_fast_settings_picks_the_least_total_time_and_keeps_the_rest(monkeypatch):
    fake = {"fp32 contiguous": [3.0, 1.5], "fp32 channels_last": [1.0, 2.0], "bf16 contiguous": [2.0, 1.5],
            "bf16 channels_last": [0.5, 4.0]}  # totals 4.5, 3.0, 3.5, 4.5: fp32 channels_last wins
    current, calls = {}, []
    real_prepare = speed.prepare
    def spy_prepare(model, settings):
        current["label"] = speed.layout_label(settings.dtype, settings.channels_last)
        return real_prepare(model, settings)
    def fake_best_of(fn, repeats=1):
        fn()  # the candidate really runs
        label = current["label"]
        calls.append(label)
        return fake[label][calls.count(label) - 1]
    monkeypatch.setattr(speed, "prepare", spy_prepare)
    monkeypatch.setattr(speed, "best_of", fake_best_of)
    monkeypatch.setattr(speed, "bf16_supported", lambda device: True)
    stages = stand_in_stages()
    start = speed.fast_settings(torch.device("cpu"), "7", "3", sampler="ddim")
    picked, times = speed.measure_fast_settings(stages, start)
    assert times == fake and sorted(set(calls)) == sorted(fake)
    assert (picked.dtype, picked.channels_last) == (None, True)
    assert (picked.name, picked.base_steps, picked.upsample_steps, picked.base_sampler) == ("fast", "7", "3", "ddim")
    for model, _, _ in stages:  # left as found: applying the settings converts the layout
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous()


def test_measure_fast_settings_leaves_emulated_bf16_out(monkeypatch):
    monkeypatch.setattr(speed, "bf16_supported", lambda device: False)
    picked, times = speed.measure_fast_settings(stand_in_stages(), speed.fast_settings(torch.device("cpu")), 1)
    assert sorted(times) == ["fp32 channels_last", "fp32 contiguous"] and picked.dtype is None
    assert all(len(row) == 2 and min(row) > 0 for row in times.values())


@pytest.mark.parametrize("part, result", [
    ("forward-grid", r"base fastest (fp32|bf16) \w+, upsampler fastest .* picked"),
    ("forward-profile", r"fp32 contiguous [\d.]+ ms .*; bf16 channels_last")])
def test_gpu_smoke_forward_parts_run_on_the_cpu_stand_ins(part, result):
    """scripts/gpu_smoke.sh's forward parts, kept from rotting between GPU runs (tiny stand-ins on the CPU)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SMOKE_DEVICE": "cpu", "SMOKE_SCALE": "tiny", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(root / "scripts" / "gpu_smoke_parts.py"), part, "1"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(rf"^RESULT: {result}", done.stdout, re.MULTILINE), done.stdout[-2000:]


def test_gpu_smoke_profile_keys_exist_on_torchs_averaged_events():
    """forward_profile's CUDA branch cannot run here; the attribute it reads must exist all the same."""
    import importlib.util

    from torch.autograd.profiler_util import FunctionEventAvg

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke_parts.py"
    spec = importlib.util.spec_from_file_location("gpu_smoke_parts", path)
    parts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parts)  # defines the parts; runs none (they run under __main__)
    assert all(hasattr(FunctionEventAvg(), key) for key in parts.PROFILE_KEYS.values()), parts.PROFILE_KEYS
