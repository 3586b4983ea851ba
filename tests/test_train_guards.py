"""Training guards (issue 12): the divergence guard never saves non-finite weights and names the last finite
checkpoint; resume refuses a changed recipe, a lower max_steps and a checkpoint that fails its sha256; stale
temp files of killed writes are removed; grad_clip 0 means no clipping (glide_minimal/train.py, checkpoint.py)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import assert_same_tensors, subprocess_env, tiny_config, write_tiny_yaml
from glide_minimal.checkpoint import CheckpointError, load_tensors, save_tensors
from glide_minimal.cli import main
from glide_minimal.train import CHECKPOINT, Trainer, TrainingDiverged


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


# -- the divergence guard ------------------------------------------------------------------------------------------
def test_nan_gradient_with_a_finite_loss_stops_before_the_update(tmp_path):
    trainer = Trainer(tiny_config({"train.ckpt_every": 2}), tmp_path, progress=False)
    trainer.run(2)
    ckpt = tmp_path / CHECKPOINT
    saved = ckpt.read_bytes()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.model.out[2].weight.register_hook(lambda g: g * float("nan"))  # the loss stays finite, one gradient not
    with pytest.raises(TrainingDiverged) as err:
        trainer.run()
    message = str(err.value)
    assert "gradient norm became nan at step 2; stopped before updating the weights" in message
    assert f"last good checkpoint ({ckpt}, step 2)" in message
    assert trainer.step == 2
    assert_same_tensors(trainer.model.state_dict(), before)
    assert ckpt.read_bytes() == saved


def test_nan_grad_clip_never_writes_a_nan_checkpoint(tmp_path):
    """The issue's run: grad_clip NaN (the config now refuses it; here it is set behind the config's back), a
    checkpoint every step. The loss is finite, the clipped gradients and the updated weights are not."""
    trainer = Trainer(tiny_config({"train.ckpt_every": 1}), tmp_path, progress=False)
    trainer.run(2)
    ckpt = tmp_path / CHECKPOINT
    saved = ckpt.read_bytes()
    trainer.cfg.train.grad_clip = float("nan")
    with pytest.raises(TrainingDiverged) as err:
        trainer.run()
    message = str(err.value)
    assert "the weights became non-finite in the update of step 2" in message
    assert f"last good checkpoint ({ckpt}, step 2)" in message
    assert ckpt.read_bytes() == saved
    tensors, meta = load_tensors(ckpt)
    assert meta["step"] == 2 and all_finite(tensors)


def test_divergence_before_the_first_checkpoint_says_there_is_none(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(), tmp_path, progress=False)
    monkeypatch.setattr(trainer.diffusion, "training_losses",
                        lambda *a, **k: {"loss": torch.full((4,), float("inf"), requires_grad=True)})
    with pytest.raises(TrainingDiverged) as err:
        trainer.run()
    message = str(err.value)
    assert "loss became inf at step 0" in message
    assert "None" not in message and "intact" not in message
    assert f"no checkpoint has been written to {tmp_path} yet" in message
    assert not (tmp_path / CHECKPOINT).exists()


def test_save_refuses_non_finite_tensors_and_keeps_the_old_file(tmp_path):
    trainer = Trainer(tiny_config(), tmp_path, progress=False)
    trainer.run(1)
    ckpt = tmp_path / CHECKPOINT
    saved = ckpt.read_bytes()
    with torch.no_grad():
        trainer.ema.out[2].weight[0] = float("nan")  # the EMA is not checked every step: the save must catch it
    trainer.step = 2
    with pytest.raises(TrainingDiverged, match=re.escape(f"refusing to write {ckpt} at step 2: 1 of ")
                       + r"\d+" + re.escape(" tensors are not finite (e.g. ema/out.2.weight)")):
        trainer.save()
    assert ckpt.read_bytes() == saved


def test_resume_refuses_a_checkpoint_with_non_finite_tensors(tmp_path):
    Trainer(tiny_config({"train.max_steps": 1}), tmp_path, progress=False).run()
    ckpt = tmp_path / CHECKPOINT
    tensors, meta = load_tensors(ckpt)
    tensors["model/out.2.bias"] = torch.full_like(tensors["model/out.2.bias"], float("nan"))  # an older version's save
    save_tensors(ckpt, tensors, meta, checksum=True)
    with pytest.raises(CheckpointError, match=re.escape(f"{ckpt} holds 1 non-finite tensors (e.g. model/out.2.bias)")):
        Trainer(tiny_config({"train.max_steps": 1}), tmp_path, resume=True, progress=False)


def test_grad_clip_zero_trains_without_clipping(tmp_path):
    runs = {}
    for name, clip in (("off", 0), ("huge", 1e9)):  # a norm never reached: clip_grad_norm_ multiplies by exactly 1
        Trainer(tiny_config({"train.grad_clip": clip, "train.max_steps": 2}), tmp_path / name, progress=False).run()
        runs[name] = load_tensors(tmp_path / name / CHECKPOINT)[0]
    assert_same_tensors(runs["off"], runs["huge"])
    init = Trainer(tiny_config(), tmp_path / "init", progress=False).state_tensors()
    assert not torch.equal(runs["off"]["model/out.2.weight"], init["model/out.2.weight"])  # it did train


def test_trainer_validates_a_config_built_in_code(tmp_path):
    cfg = tiny_config()
    cfg.train.lr = float("nan")  # a dataclass edited after load_config validated it
    with pytest.raises(ValueError, match=re.escape("train.lr must be a finite number > 0, got nan")):
        Trainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_trainer_refuses_a_device_this_machine_lacks_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=re.escape("unknown device 'gpu'; use cpu, cuda, cuda:N or mps")):
        Trainer(tiny_config(), tmp_path / "run", device="gpu", progress=False)
    assert not (tmp_path / "run").exists()


# -- resume: the same recipe, forward only ------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value"), [
    ("train.lr", 1e-3), ("train.seed", 1), ("train.batch_size", 16), ("train.weight_decay", 0.01),
    ("train.grad_clip", 0.5), ("train.warmup_steps", 3), ("diffusion.noise_schedule", "squaredcos_cap_v2"),
    ("model.num_res_blocks", 2),
])
def test_resume_with_a_different_recipe_names_the_field_and_both_values(tmp_path, key, value):
    Trainer(tiny_config({"train.max_steps": 1}), tmp_path, progress=False).run()
    config_json = (tmp_path / "config.json").read_text()
    section, name = key.split(".")
    old = getattr(getattr(tiny_config(), section), name)
    new = getattr(getattr(tiny_config({key: value}), section), name)
    with pytest.raises(CheckpointError) as err:
        Trainer(tiny_config({key: value}), tmp_path, resume=True, progress=False)
    message = str(err.value)
    assert f"{tmp_path / CHECKPOINT} was trained with a different recipe" in message
    assert f"{key}: {old!r} in the checkpoint, {new!r} now" in message
    assert str(tmp_path / "config.json") in message
    assert (tmp_path / "config.json").read_text() == config_json  # the run folder still describes the checkpoint


def test_resume_lists_every_field_that_differs(tmp_path):
    Trainer(tiny_config({"train.max_steps": 1}), tmp_path, progress=False).run()
    with pytest.raises(CheckpointError) as err:
        Trainer(tiny_config({"train.lr": 1e-3, "train.seed": 7}), tmp_path, resume=True, progress=False)
    assert "train.lr: 0.002 in the checkpoint, 0.001 now; train.seed: 0 in the checkpoint, 7 now" in str(err.value)


def test_resume_may_change_logging_checkpointing_and_max_steps(tmp_path):
    """These keys change how a run is watched and how far it goes, not what each step computes."""
    cfg = tiny_config({"train.max_steps": 6, "train.ckpt_every": 100})
    Trainer(cfg, tmp_path / "straight", progress=False).run()
    Trainer(tiny_config({"train.max_steps": 3}), tmp_path / "split", progress=False).run()
    later = tiny_config({"train.max_steps": 6, "train.log_every": 2, "train.ckpt_every": 4})
    Trainer(later, tmp_path / "split", resume=True, progress=False).run()
    straight, _ = load_tensors(tmp_path / "straight" / CHECKPOINT)
    split, meta = load_tensors(tmp_path / "split" / CHECKPOINT)
    assert meta["step"] == 6
    assert_same_tensors(split, straight)


def test_max_steps_below_the_checkpoint_step_is_an_error(tmp_path, capsys):
    Trainer(tiny_config({"train.max_steps": 4}), tmp_path, progress=False).run()
    ckpt = tmp_path / CHECKPOINT
    saved = ckpt.read_bytes()
    trainer = Trainer(tiny_config({"train.max_steps": 4}), tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match=re.escape(f"max_steps 2 is below step 4, where the run resumed from {ckpt}")):
        trainer.run(2)
    with pytest.raises(ValueError, match=re.escape("train.max_steps 3 is below step 4")):
        Trainer(tiny_config({"train.max_steps": 3}), tmp_path, resume=True, progress=False).run()
    assert trainer.run(4)["steps_run"] == 0  # reaching the step it is at is nothing to do, not an error
    with pytest.raises(ValueError, match=re.escape("max_steps must be an integer, got 5.5")):
        trainer.run(5.5)
    assert ckpt.read_bytes() == saved

    config = write_tiny_yaml(tmp_path / "tiny.yaml", {"train.max_steps": 4})
    args = ["train", "--config", str(config), "--out", str(tmp_path / "cli"), "--no-progress"]
    assert main(args) == 0
    assert main([*args, "--resume", "--max-steps", "2"]) == 2
    assert "max_steps 2 is below step 4" in capsys.readouterr().err


# -- checksums ----------------------------------------------------------------------------------------------------
def test_flipped_byte_in_a_training_checkpoint_is_an_error_naming_the_file(tmp_path):
    Trainer(tiny_config({"train.max_steps": 2}), tmp_path, progress=False).run()
    ckpt = tmp_path / CHECKPOINT
    good = ckpt.read_bytes()
    header_end = 8 + int.from_bytes(good[:8], "little")
    for position in (header_end + 17, (header_end + len(good)) // 2, len(good) - 3):  # tensor bytes
        payload = bytearray(good)
        payload[position] ^= 0x01  # one bit: still a well-formed safetensors file
        ckpt.write_bytes(bytes(payload))
        with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {ckpt} fails its sha256 check")):
            Trainer(tiny_config({"train.max_steps": 2}), tmp_path, resume=True, progress=False)
        with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {ckpt} fails its sha256 check")):
            load_tensors(ckpt)
    # the metadata is covered too: a changed step or lr in the JSON header
    assert good.count(b"0.002") >= 1
    ckpt.write_bytes(good.replace(b"0.002", b"0.003", 1))
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {ckpt} fails its sha256 check")):
        Trainer(tiny_config({"train.max_steps": 2}), tmp_path, resume=True, progress=False)
    ckpt.write_bytes(good)
    assert Trainer(tiny_config({"train.max_steps": 2}), tmp_path, resume=True, progress=False).step == 2


def test_training_checkpoint_without_a_checksum_is_refused(tmp_path):
    Trainer(tiny_config({"train.max_steps": 1}), tmp_path, progress=False).run()
    ckpt = tmp_path / CHECKPOINT
    tensors, meta = load_tensors(ckpt)
    save_tensors(ckpt, tensors, meta)  # no sha256 recorded
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {ckpt} records no sha256")):
        Trainer(tiny_config({"train.max_steps": 1}), tmp_path, resume=True, progress=False)


# -- temp files of killed writes ----------------------------------------------------------------------------------
def killed_write(target) -> list:
    """Run atomic_write_bytes in a child that is SIGKILLed between writing the temp file and renaming it."""
    script = textwrap.dedent(f"""
        import os, signal
        from glide_minimal import checkpoint
        os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.atomic_write_bytes({str(target)!r}, b"x" * 1000)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    return sorted(target.parent.glob(f".{target.name}.*.tmp"))


def test_stale_temp_files_of_this_run_are_removed_on_start_and_on_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    orphans = killed_write(run / CHECKPOINT) + killed_write(run / "config.json")
    assert len(orphans) == 2 and all(p.stat().st_size == 1000 for p in orphans)
    others = [run / "notes.tmp", run / f".{CHECKPOINT}.tmp", run / f"{CHECKPOINT}.abcdefgh.tmp",
              run / ".other.safetensors.abcdefgh.tmp", run / f".{CHECKPOINT}.abcdefgh.tmp.keep"]
    for path in others:
        path.write_bytes(b"not ours")
    Trainer(tiny_config({"train.max_steps": 1}), run, progress=False).run()
    assert not any(p.exists() for p in orphans)
    assert all(p.exists() for p in others)  # only names our own atomic writes produce are removed

    orphans = killed_write(run / CHECKPOINT)
    assert orphans
    Trainer(tiny_config({"train.max_steps": 1}), run, resume=True, progress=False)
    assert not any(p.exists() for p in orphans)
    assert json.loads((run / "config.json").read_text())["train"]["max_steps"] == 1
