"""The tier switch (glide_minimal/tier.py): bad settings, name mapping, and GPU-tier models that are trained
on demand into the user cache (exercised in smoke mode on CPU, as CI does), resumed, refused when corrupt or
of another recipe; and the evaluators reading the GPU tier's larger images."""
from __future__ import annotations

import json
import re
import time

import pytest
import torch

import glide_minimal as gm
from glide_minimal import pretrained
from glide_minimal.checkpoint import CheckpointError
from glide_minimal.memory import per_gpu_memory
from glide_minimal.shapesworld import render_caption
from glide_minimal.tier import SMOKE, Tier, tier
from glide_minimal.train import Trainer

CPU = torch.device("cpu")


@pytest.fixture
def smoke(monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_TIER", "gpu")
    monkeypatch.setenv("GLIDE_MINIMAL_SMOKE", "1")
    return tier()


def test_unknown_tier_names_the_choices(monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_TIER", "tpu")
    with pytest.raises(ValueError, match=r"'tpu' is not a tier; choose one of: cpu, gpu"):
        tier()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpu_tier_without_cuda_says_how_to_smoke_run(monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_TIER", "gpu")
    monkeypatch.delenv("GLIDE_MINIMAL_SMOKE", raising=False)
    with pytest.raises(RuntimeError, match="GLIDE_MINIMAL_TIER=gpu GLIDE_MINIMAL_SMOKE=1"):
        tier()


def test_smoke_needs_the_gpu_tier(monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_TIER", "cpu")
    monkeypatch.setenv("GLIDE_MINIMAL_SMOKE", "1")
    with pytest.raises(ValueError, match="set GLIDE_MINIMAL_TIER=gpu"):
        tier()


@pytest.mark.parametrize("minutes", ["0", "-3", "nan", "soon"])
def test_budget_must_be_positive_minutes(monkeypatch, minutes):
    monkeypatch.setenv("GLIDE_MINIMAL_TIER", "cpu")
    monkeypatch.setenv("GLIDE_MINIMAL_GPU_MINUTES", minutes)
    with pytest.raises(ValueError, match=f"GLIDE_MINIMAL_GPU_MINUTES must be .*> 0.*{minutes}"):
        tier()


def test_default_tier_follows_cuda(monkeypatch):
    monkeypatch.delenv("GLIDE_MINIMAL_TIER", raising=False)
    monkeypatch.delenv("GLIDE_MINIMAL_SMOKE", raising=False)
    t = tier()
    assert (t.name, t.device.type) == (("gpu", "cuda") if torch.cuda.is_available() else ("cpu", "cpu"))
    assert str(t).startswith(f"device={t.device.type}  tier={t.name}")


def test_names_map_to_the_tier():
    cpu, gpu = Tier("cpu", CPU), Tier("gpu", CPU)
    assert cpu.config_name("tutorial-text") == "tutorial-text"
    assert gpu.config_name("tutorial-text") == "tutorial-text-gpu"
    assert gpu.config_name("tutorial-text-upsample-gpu") == "tutorial-text-upsample-gpu"
    assert cpu.checkpoint("tutorial-inpaint") == "tutorial-inpaint"
    with pytest.raises(KeyError, match="'glide-filtered-base' has no GPU-tier config 'glide-filtered-base-gpu'"):
        gpu.config_name("glide-filtered-base")
    assert gpu.config("tutorial-text").model.image_size == 32


def test_every_cpu_model_of_the_book_has_a_gpu_config():
    """The chapters load these shipped CPU-tier models; the GPU tier needs each one's -gpu config."""
    diffusion = [n for n in pretrained.available(pretrained.CHECKOUT_DATA) if not n.endswith(("evaluator",))
                 and pretrained.entry(n).get("kind") in (None, "diffusion", "classifier", "clip")]
    assert "tutorial-text" in diffusion
    missing = [n for n in diffusion if f"{n}-gpu" not in gm.available_configs()]
    assert not missing, f"no GPU-tier config for {missing}"
    # the default budget's arithmetic (tier.py, scripts/gpu_book.sh) counts 15 models trained on the spot
    assert len(diffusion) == 15, f"the GPU tier now trains {len(diffusion)} models: update the budget comments"


@pytest.mark.parametrize("name", [n for n in gm.available_configs() if n.endswith("-gpu")])
def test_every_gpu_tier_model_trains_on_one_80_gib_card(name):
    """The GPU tier runs on one H100-class GPU: each config's training at its batch, plain DDP on one card
    (weights, gradients, AdamW, EMA and the activations of a forward on the meta device), fits."""
    cfg = gm.load_config(name)
    plain = per_gpu_memory(cfg, 1)[0]
    assert plain.strategy == "DDP" and plain.fits(), f"{name}: {plain.total / 2**30:.1f} GiB on one card"


def test_smoke_tier_shrinks_configs_but_keeps_sizes(smoke):
    cfg = smoke.config("tutorial-text-upsample")
    assert (cfg.name, cfg.model.image_size, cfg.data.low_res_size) == ("tutorial-text-upsample-gpu", 128, 32)
    assert cfg.model.model_channels == SMOKE["model.model_channels"]
    assert cfg.train.max_steps == SMOKE["train.max_steps"]
    assert "SMOKE RUN" in str(smoke)


def test_claims_assert_except_in_smoke(smoke, capsys):
    Tier("cpu", CPU).claim(True, "fine")
    with pytest.raises(AssertionError, match="guidance raises accuracy"):
        Tier("cpu", CPU).claim(False, "guidance raises accuracy")
    smoke.claim(False, "guidance raises accuracy")
    assert "smoke run, not checked: guidance raises accuracy (does not hold here)" in capsys.readouterr().out


def test_missing_gpu_model_is_trained_published_and_then_loaded(smoke, capsys):
    name = smoke.checkpoint("tutorial-digits")
    assert name == "tutorial-digits-gpu"
    assert "training it here" in capsys.readouterr().out
    loc, entry = pretrained.locate(name)
    assert loc.path == pretrained.cache_dir() / "smoke-checkpoints"
    assert entry["steps"] == SMOKE["train.max_steps"]
    assert entry["companions"] == {"classifier": "tutorial-digits-classifier-gpu"}
    assert "GLIDE_MINIMAL_SMOKE=1" in entry["command"]
    first = entry["sha256"]
    assert smoke.checkpoint("tutorial-digits") == name  # found now: not trained again
    assert "training" not in capsys.readouterr().out and pretrained.entry(name)["sha256"] == first
    pipe = smoke.load_pipeline("tutorial-digits")
    images = pipe([3, 4], steps="2", method="classifier", guidance_scale=1.0, seed=0)  # trains the classifier
    assert images.shape == (2, 1, 32, 32) and images.isfinite().all()
    assert "tutorial-digits-classifier-gpu" in pretrained.available()


def test_the_cascade_and_inpainting_run_on_their_gpu_pairs(smoke):
    pipe = smoke.load_pipeline("tutorial-text")
    caption = "a large red circle on the left"
    images = pipe([caption], steps="2", upsample=True, upsample_steps="2", seed=0)
    assert images.shape == (1, 3, 128, 128)
    edit = smoke.load_pipeline("tutorial-inpaint")
    image = render_caption(caption, 128)[None]
    mask = torch.ones(1, 1, 128, 128)
    mask[..., 32:96, 32:96] = 0  # fill the centre
    out = edit(caption, image, mask, steps="2", upsample_steps="2", seed=0)
    assert out.shape == (1, 3, 128, 128)
    assert pretrained.entry("tutorial-text-inpaint-gpu")["init_from"] == "tutorial-text-gpu"


def test_a_cached_model_of_another_recipe_is_refused(smoke):
    cfg = smoke.config("tutorial-ddpm", {"model.dropout": 0.3})
    model = gm.build_model(cfg)
    pretrained.publish("tutorial-ddpm-gpu", model.state_dict(), json.loads(cfg.to_json()), record={},
                       root=pretrained.user_checkpoints())
    with pytest.raises(CheckpointError, match=r"trained from another config .*model.dropout: 0.3 in the checkpoint"):
        smoke.checkpoint("tutorial-ddpm")


def test_a_corrupt_cache_file_is_refused_by_name(smoke):
    smoke.checkpoint("tutorial-ddpm")
    path = pretrained.user_checkpoints() / "tutorial-ddpm-gpu.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"garbage!")
    with pytest.raises(CheckpointError, match=f"{path}.*sha256"):
        smoke.load_pipeline("tutorial-ddpm")


def test_an_interrupted_training_resumes(smoke, capsys):
    cfg = smoke.config("tutorial-ddpm")
    run = pretrained.cache_dir() / "smoke-runs" / "tutorial-ddpm-gpu"
    Trainer(cfg, run, device="cpu", progress=False).run(max_steps=2)  # killed after its step-2 checkpoint
    smoke.checkpoint("tutorial-ddpm")
    assert f"resuming {run} at step 2" in capsys.readouterr().out
    assert pretrained.entry("tutorial-ddpm-gpu")["steps"] == cfg.train.max_steps


def test_time_budget_stops_training_with_a_checkpoint(tmp_path):
    cfg = Tier("gpu", CPU, smoke=True).config("tutorial-ddpm", {"train.max_steps": 50})
    start = time.perf_counter()
    result = Trainer(cfg, tmp_path, device="cpu", progress=False).run(time_budget_s=1e-6)
    assert result["stopped"] == "time budget" and result["steps_run"] == 1
    assert time.perf_counter() - start < 60
    resumed = Trainer(cfg, tmp_path, device="cpu", resume=True, progress=False)
    assert resumed.step == 1
    with pytest.raises(ValueError, match="time_budget_s must be > 0"):
        resumed.run(time_budget_s=0)


def test_evaluators_read_multiples_of_their_size():
    captions = ["a large red circle on the left", "a small blue square in the top right"]
    judge = gm.load_evaluator("shapes-evaluator-16")
    small = torch.stack([render_caption(c, 16) for c in captions])
    big = torch.stack([render_caption(c, 32) for c in captions])
    torch.testing.assert_close(judge.features(big), judge.features(small), atol=1e-5, rtol=1e-5)
    assert judge.caption_accuracy(big, captions)["caption"] == 1.0
    with pytest.raises(ValueError, match="reads 16 px images .*got 24 px"):
        judge.features(torch.rand(1, 3, 24, 24))
    digits = gm.load_evaluator("digits-evaluator")
    x32, y = gm.load_digits(32, "test")
    assert digits.accuracy(x32[:300], y[:300]) > 0.9


def write_notebook(path, *cells: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(nb, path)


def test_run_book_executes_a_scratch_copy_and_reports_claims(tmp_path):
    """scripts/run_book.py (make test-smoke, scripts/gpu_book.sh): the chapter's claims come back, the
    notebook itself is not written, and a raising chapter fails the run."""
    import subprocess
    import sys
    from pathlib import Path

    good, bad = tmp_path / "good.ipynb", tmp_path / "bad.ipynb"
    write_notebook(good, "import glide_minimal as gm\nTIER = gm.tier()\nprint(TIER)",
                   "TIER.claim(False, 'guidance helps')\nTIER.claim(True, 'loss falls')",
                   "TIER.checkpoint('tutorial-ddpm')")  # not in the fresh cache: trained on the spot
    write_notebook(bad, "raise ValueError('broken chapter')")
    before = good.read_bytes()
    script = Path(__file__).resolve().parents[1] / "scripts" / "run_book.py"
    run = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path / "out"), str(good), str(bad)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1/2 held" not in run.stdout and "1/2" in run.stdout  # good: one of two claims held
    assert "DOES NOT HOLD: guidance helps" in run.stdout and "holds: loss falls" in run.stdout
    assert "FAILED: ValueError: broken chapter" in run.stdout
    assert "1/2 chapters ran top to bottom" in run.stdout
    steps = SMOKE["train.max_steps"]
    assert re.search(rf"^  go trained tutorial-ddpm-gpu: {steps} steps in \d+ s \(\d+ images/s; stopped: \w+\), "
                     r"data and model ready in \d+ s$", run.stdout, re.MULTILINE), run.stdout
    assert good.read_bytes() == before and (tmp_path / "out" / "good.ipynb").exists()


def test_each_tier_size_has_a_shapes_judge():
    from glide_minimal.evaluators import shapes_evaluator

    assert [shapes_evaluator(s).classifier.image_size for s in (16, 32, 64, 128)] == [16, 16, 64, 64]
    with pytest.raises(ValueError, match="no shipped ShapesWorld evaluator reads 24 px"):
        shapes_evaluator(24)


def test_cache_lock_is_reentrant_and_excludes_other_processes(tmp_path):
    """A fine-tuned model trains its source while the lock is held; another process waits for it."""
    import subprocess
    import sys

    from glide_minimal.tier import cache_lock

    probe = ("import fcntl, sys; f = open(sys.argv[1], 'w')\n"
             "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")
    lock = pretrained.cache_dir() / ".lock"
    with cache_lock(), cache_lock():
        held = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout
    free = subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, text=True).stdout
    assert (held.strip(), free.strip()) == ("held", "free")
