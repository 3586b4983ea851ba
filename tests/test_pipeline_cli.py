"""Pipelines and the `glide-minimal` command (glide_minimal/pipeline.py, glide_minimal/cli.py, viz.image_grid)."""
from __future__ import annotations

import re

import matplotlib.pyplot as plt
import pytest
import torch

from conftest import ROOT, randomize_, tiny_config
from glide_minimal import pretrained
from glide_minimal.cli import main
from glide_minimal.config import available_configs
from glide_minimal.models import build_model
from glide_minimal.pipelines import DiffusionPipeline, InpaintPipeline, load_pipeline
from glide_minimal.viz import image_grid

SHIPPED = ROOT / "data" / "checkpoints"
SHIPPED_DIFFUSION = [name for name, e in pretrained.manifest(SHIPPED).items()
                     if (e.get("kind") or "diffusion") == "diffusion" and "evaluator" not in name]


@pytest.fixture
def pipe() -> DiffusionPipeline:
    cfg = tiny_config()
    torch.manual_seed(0)
    return DiffusionPipeline(randomize_(build_model(cfg)).eval(), cfg)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpm++2m"])
def test_pipeline_returns_images_in_unit_range(pipe, sampler):
    images = pipe(3, steps=5, sampler=sampler, seed=0)
    assert images.shape == (3, 1, 8, 8)
    assert images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.01  # not a constant image


@pytest.mark.parametrize("sampler, eta", [("ancestral", 0.0), ("ddim", 0.5), ("dpm++2m", 0.0)])
def test_pipeline_same_seed_gives_same_images(pipe, sampler, eta):
    a = pipe(2, steps=5, sampler=sampler, eta=eta, seed=7)
    assert torch.equal(a, pipe(2, steps=5, sampler=sampler, eta=eta, seed=7))
    assert not torch.equal(a, pipe(2, steps=5, sampler=sampler, eta=eta, seed=8))  # x_T follows the seed


def test_pipeline_default_steps_come_from_the_config(pipe):
    assert pipe.diffusion().timestep_map == pipe.diffusion("10").timestep_map
    assert pipe.diffusion().num_timesteps == 10
    assert pipe.diffusion(50).num_timesteps == 50  # all of the 50-step chain
    assert pipe.diffusion("ddim5").timestep_map == [0, 10, 20, 30, 40]


def test_pipeline_sample_stays_in_model_space_and_can_return_a_trajectory(pipe):
    x, traj = pipe.sample(2, steps=5, seed=0, return_trajectory=True)
    assert x.shape == (2, 1, 8, 8)
    assert traj.x_t.shape == (5, 2, 1, 8, 8) and len(traj.timesteps) == 5


def test_unknown_sampler_error_lists_the_samplers(pipe):
    with pytest.raises(ValueError, match="unknown sampler 'plms'; choose one of: ancestral, ddim"):
        pipe(1, sampler="plms")


@pytest.mark.parametrize(("steps", "message"), [
    (0, r"steps must be in 1\.\.50, got 0"),
    (51, r"steps must be in 1\.\.50, got 51"),
    ("fifty", "bad respacing 'fifty'"),
])
def test_bad_steps_error(pipe, steps, message):
    with pytest.raises(ValueError, match=message):
        pipe(1, steps=steps)


def test_num_images_below_one_is_an_error(pipe):
    with pytest.raises(ValueError, match="num_images must be a whole number >= 1, got 0"):
        pipe(0)


@pytest.mark.parametrize(("steps", "sampler"),
                         [(1, "ancestral"), (1, "ddim"), ("ddim1", "ddim"), ("ddim1", "ancestral")])
def test_a_one_step_chain_samples_through_the_shipped_pipeline(monkeypatch, steps, sampler):
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(SHIPPED))
    pipe = load_pipeline("tutorial-ddpm", "cpu")
    images = pipe(1, steps=steps, sampler=sampler, seed=0)
    assert pipe.diffusion(steps).num_timesteps == 1
    m = pipe.cfg.model
    assert images.shape == (1, m.in_channels, m.image_size, m.image_size)
    assert torch.isfinite(images).all() and 0 <= images.min() and images.max() <= 1


def test_image_grid_lays_out_rows_with_padding():
    images = torch.rand(5, 1, 4, 4)
    grid = image_grid(images, nrow=3, pad=1)
    assert grid.shape == (2 * 5 - 1, 3 * 5 - 1)  # two rows of three 4x4 tiles, 1 px between tiles
    assert (grid[:4, :4] == images[0, 0].numpy()).all()
    assert (grid[5:9, 5:9] == images[4, 0].numpy()).all()
    assert (grid[5:, 10:] == 1.0).all()  # the missing sixth tile is padding
    assert image_grid(torch.rand(2, 3, 4, 4), nrow=2).shape == (4, 9, 3)


def test_cli_info_prints_the_parameter_count(capsys):
    assert main(["info", "--config", "tutorial-ddpm"]) == 0
    count = sum(p.numel() for p in build_model("tutorial-ddpm", device="meta").parameters())
    assert re.search(rf"^parameters\s+{count:,}$", capsys.readouterr().out, re.MULTILINE)


def test_cli_info_list_prints_every_config(capsys):
    assert main(["info", "--list"]) == 0
    assert capsys.readouterr().out.split() == available_configs()


def test_cli_unknown_config_exits_2_and_lists_the_known_configs(capsys):
    assert main(["train", "--config", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown config 'nope'" in err
    assert f"known: {', '.join(available_configs())}" in err


def test_cli_unknown_override_key_exits_2_naming_the_key(capsys, tmp_path):
    assert main(["train", "--config", "tutorial-ddpm", "--out", str(tmp_path / "run"), "--set", "model.foo=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key model.'foo'" in err and "image_size" in err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_cli_malformed_override_exits_2(capsys, tmp_path):
    assert main(["train", "--config", "tutorial-ddpm", "--out", str(tmp_path / "run"), "--set", "model.dropout"]) == 2
    assert "must look like section.key=value" in capsys.readouterr().err


def test_cli_sample_writes_a_grid_from_a_published_checkpoint(tmp_path, pipe, monkeypatch, capsys):
    pretrained.publish("tiny", pipe.model.state_dict(), pipe.cfg.to_dict(), record={"command": "pytest"},
                       root=tmp_path / "ckpts")
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path / "ckpts"))
    out = tmp_path / "grid.png"
    assert main(["sample", "--pipeline", "tiny", "--num-images", "6", "--nrow", "3", "--steps", "5",
                 "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert f"wrote {out}: 6 images of (1, 8, 8)" in capsys.readouterr().out
    assert plt.imread(out).shape[:2] == (2 * 9 - 1, 3 * 9 - 1)


def test_cli_sample_unknown_pipeline_exits_2_listing_the_checkpoints(tmp_path, pipe, monkeypatch, capsys):
    pretrained.publish("tiny", pipe.model.state_dict(), pipe.cfg.to_dict(), record={"command": "pytest"},
                       root=tmp_path)
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path))
    assert main(["sample", "--pipeline", "huge", "--out", str(tmp_path / "x.png"), "--device", "cpu"]) == 2
    assert "unknown checkpoint 'huge'; shipped: tiny" in capsys.readouterr().err


def test_load_pipeline_of_a_non_diffusion_checkpoint_names_the_problem(monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(SHIPPED))
    if "digits-evaluator" not in pretrained.available(SHIPPED):
        pytest.fail("the shipped digits-evaluator checkpoint is gone: rewrite this test")
    with pytest.raises(ValueError, match="'digits-evaluator' is a .* checkpoint, not a diffusion model"):
        load_pipeline("digits-evaluator", "cpu")


@pytest.mark.parametrize("name", SHIPPED_DIFFUSION)
def test_shipped_pipeline_samples(name, monkeypatch):
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(SHIPPED))
    pipe = load_pipeline(name, "cpu")
    prompts = ["a large red circle in the center", ""]
    if isinstance(pipe, InpaintPipeline):  # an inpainting checkpoint: its whole group edits a 64 px image
        image = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        mask = torch.ones(2, 1, 64, 64)
        mask[:, :, 16:48, 8:40] = 0
        edited = pipe(prompts, image=image, mask=mask, steps=5, upsample_steps=5, seed=0)
        assert edited.shape == image.shape and torch.equal(edited * mask, image * mask)
        return
    m = pipe.cfg.model
    if m.super_res:
        low_res = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        images = pipe(prompts, low_res=low_res, steps=5, seed=0)
    elif m.num_classes:
        images = pipe(labels=[0, 1], steps=5, seed=0)
    elif m.text_ctx:
        images = pipe(prompts, steps=5, seed=0)
    else:
        images = pipe(2, steps=5, seed=0)
    assert images.shape == (2, m.in_channels, m.image_size, m.image_size)
    assert images.min() >= 0 and images.max() <= 1


def test_cli_sample_with_prompts_from_a_text_checkpoint(tmp_path, monkeypatch, capsys):
    from conftest import tiny_text_config

    cfg = tiny_text_config()
    torch.manual_seed(0)
    pretrained.publish("tiny-text", build_model(cfg).state_dict(), cfg.to_dict(), record={"command": "pytest"},
                       root=tmp_path / "ckpts")
    monkeypatch.setenv("GLIDE_MINIMAL_CHECKPOINTS", str(tmp_path / "ckpts"))
    out = tmp_path / "grid.png"
    args = ["sample", "--pipeline", "tiny-text", "--steps", "3", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(args + ["--prompt", "a red circle", "a blue square"]) == 0
    assert f"wrote {out}: 2 images of (3, 16, 16)" in capsys.readouterr().out
    assert main(args + ["--prompt", "a red circle", "--num-images", "3"]) == 0
    assert "3 images" in capsys.readouterr().out
    assert main(args + ["--prompt", "a purple circle"]) == 2
    assert "unknown word 'purple'" in capsys.readouterr().err
    assert main(args) == 2
    assert "text-conditional: pass --prompt" in capsys.readouterr().err
    assert main(args + ["--prompt", "a red circle", "--guidance", "clip"]) == 2
    assert "needs a noised CLIP checkpoint" in capsys.readouterr().err


def test_cli_flags_take_their_choices_from_the_one_list_of_each():
    from glide_minimal import cli
    from glide_minimal.checks import SAMPLERS
    from glide_minimal.convert import DTYPES

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert list(commands) == list(cli.COMMANDS)  # one dispatch table: every subcommand parses and runs
    flags = {name: {a.dest: a for a in p._actions} for name, p in commands.items()}
    assert tuple(flags["sample"]["sampler"].choices) == SAMPLERS
    assert list(flags["convert"]["dtype"].choices) == list(DTYPES)


def test_cli_runs_the_subcommand_the_dispatch_table_names(monkeypatch):
    from glide_minimal import cli

    seen = []
    monkeypatch.setitem(cli.COMMANDS, "info", cli.COMMANDS["info"]._replace(run=lambda args: seen.append(args) or 7))
    assert main(["info", "--list"]) == 7 and seen[0].list
