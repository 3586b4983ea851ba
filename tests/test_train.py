"""Training: the loss falls, checkpoints round-trip, resume is exact (also after SIGKILL), divergence
and corrupt checkpoints fail loudly, and DDP over two processes equals one process
(glide_minimal/train.py, glide_minimal/checkpoint.py)."""
from __future__ import annotations

import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import (
    assert_same_tensors,
    checkpoint_step,
    cli_command,
    run_cli,
    straight_and_resumed,
    subprocess_env,
    tiny_config,
    write_tiny_yaml,
)
from glide_minimal.checkpoint import CheckpointError, load_tensors
from glide_minimal.cli import main
from glide_minimal.config import config_from_dict, load_config
from glide_minimal.train import CHECKPOINT, Trainer, TrainingDiverged

# Resume tests use dropout and warmup so that replaying a step exactly needs the same dropout masks and lr.
REPLAY = {"model.dropout": 0.1, "train.warmup_steps": 4, "train.ema_rate": 0.9}


def log_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]


def losses(run_dir: Path) -> list[tuple]:
    """(step, loss, mse) of every log row: the reproducible columns (timings are not)."""
    return [(r["step"], r["loss"], r["mse"]) for r in log_rows(run_dir)]


def test_a_few_steps_lower_the_loss(tmp_path):
    cfg = tiny_config({"train.batch_size": 16, "train.max_steps": 60, "train.ckpt_every": 60})
    Trainer(cfg, tmp_path, progress=False).run()
    curve = [r["loss"] for r in log_rows(tmp_path)]
    assert len(curve) == 60
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    # a fresh U-Net predicts eps = 0, so the loss starts at E[eps^2] = 1; 60 steps bring it well below
    assert first > 0.7
    assert last < 0.6 * first, f"loss did not fall: first five {curve[:5]}, last five {curve[-5:]}"


def test_warmup_ramps_the_learning_rate_linearly():
    trainer = Trainer.__new__(Trainer)  # lr_at needs only the config
    trainer.cfg = tiny_config({"train.lr": 1e-3, "train.warmup_steps": 4})
    assert [trainer.lr_at(s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_run_writes_config_log_and_checkpoint(tmp_path):
    cfg = tiny_config({"train.max_steps": 4, "train.ckpt_every": 2, "train.log_every": 2})
    summary = Trainer(cfg, tmp_path, progress=False).run()
    assert summary["step"] == 4 and summary["steps_run"] == 4
    assert config_from_dict(json.loads((tmp_path / "config.json").read_text())) == cfg
    assert [r["step"] for r in log_rows(tmp_path)] == [2, 4]
    tensors, meta = load_tensors(tmp_path / CHECKPOINT)
    assert meta["step"] == 4 and meta["format"] == "glide-minimal-train/1"
    assert {k.split("/")[0] for k in tensors} == {"model", "ema", "optim"}


def test_checkpoint_round_trip_restores_model_ema_optimizer_and_step(tmp_path):
    cfg = tiny_config({"train.max_steps": 3, **REPLAY})
    first = Trainer(cfg, tmp_path, progress=False)
    first.run()
    second = Trainer(cfg, tmp_path, resume=True, progress=False)
    assert second.step == 3
    assert second.wall_time_s == first.wall_time_s
    assert_same_tensors(second.state_tensors(), first.state_tensors())
    # the EMA really is a different set of weights from the model
    assert not torch.equal(first.ema.out[2].weight, first.model.out[2].weight)


def test_resume_continues_exactly_where_the_run_stopped(tmp_path):
    cfg = tiny_config({"train.max_steps": 8, "train.ckpt_every": 100, **REPLAY})
    straight, split, meta = straight_and_resumed(cfg, tmp_path, stop_at=4)
    assert meta["step"] == 8
    assert_same_tensors(split, straight)
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    config = write_tiny_yaml(tmp_path / "tiny.yaml", {"train.max_steps": 40, "train.ckpt_every": 5, **REPLAY})
    args = ("train", "--config", str(config), "--threads", "1", "--no-progress", "--device", "cpu")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    popen = dict(cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reference = subprocess.Popen(cli_command(*args, "--out", str(straight)), **popen)
    victim = subprocess.Popen(cli_command(*args, "--out", str(killed)), **popen)
    try:
        deadline = time.monotonic() + 120
        while (step := checkpoint_step(killed / CHECKPOINT)) is None:
            assert victim.poll() is None, f"the run ended before its first checkpoint:\n{victim.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            try:
                victim.wait(timeout=0.01)  # poll the file while the child runs
            except subprocess.TimeoutExpired:
                pass
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        assert 5 <= step < 40, f"killed at step {step}: the run was already complete"
        assert reference.wait(timeout=120) == 0, reference.stderr.read()[-2000:]
    finally:
        for proc in (victim, reference):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()

    run_cli(*args, "--out", str(killed), "--resume", cwd=tmp_path)
    resumed, meta = load_tensors(killed / CHECKPOINT)
    expected, _ = load_tensors(straight / CHECKPOINT)
    assert meta["step"] == 40
    assert_same_tensors(resumed, expected)  # model/, ema/ and optim/ tensors, bit for bit
    assert losses(killed) == losses(straight)  # log rows written after the checkpoint were dropped and replayed


def test_nan_loss_raises_training_diverged_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config({"train.max_steps": 10, "train.ckpt_every": 2}), tmp_path, progress=False)
    real_losses = trainer.diffusion.training_losses

    def nan_at_step_3(*args, **kwargs):
        terms = real_losses(*args, **kwargs)
        return {k: v * float("nan") for k, v in terms.items()} if trainer.step == 3 else terms

    monkeypatch.setattr(trainer.diffusion, "training_losses", nan_at_step_3)
    trainer.run(2)
    ckpt = tmp_path / CHECKPOINT
    saved = ckpt.read_bytes()
    with pytest.raises(TrainingDiverged) as err:
        trainer.run()
    message = str(err.value)
    assert "loss became nan at step 3" in message
    assert str(ckpt) in message and "step 2" in message
    assert ckpt.read_bytes() == saved
    # the weights were not updated by the diverged step: they are step 3's, not step 4's
    assert trainer.step == 3


def test_cli_reports_divergence_with_exit_code_3(tmp_path, monkeypatch, capsys):
    from glide_minimal.diffusion import GaussianDiffusion

    monkeypatch.setattr(GaussianDiffusion, "training_losses",
                        lambda self, model_fn, x_start, t, noise=None, model_kwargs=None: {
                            "loss": torch.full((len(x_start),), float("inf"))})
    config = write_tiny_yaml(tmp_path / "tiny.yaml")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 3
    assert "loss became inf at step 0" in capsys.readouterr().err


def test_corrupt_checkpoint_error_names_the_file(tmp_path):
    (tmp_path / CHECKPOINT).write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {tmp_path / CHECKPOINT} is corrupt or truncated")):
        Trainer(tiny_config(), tmp_path, resume=True, progress=False)


def test_truncated_checkpoint_error_names_the_file(tmp_path):
    Trainer(tiny_config({"train.max_steps": 1}), tmp_path, progress=False).run()
    ckpt = tmp_path / CHECKPOINT
    payload = ckpt.read_bytes()
    ckpt.write_bytes(payload[: len(payload) // 2])
    message = f"checkpoint {ckpt} is corrupt or truncated ({len(payload) // 2} bytes"
    with pytest.raises(CheckpointError, match=re.escape(message)):
        Trainer(tiny_config(), tmp_path, resume=True, progress=False)


def test_missing_checkpoint_error_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint {tmp_path / 'nope.safetensors'} does not exist")):
        load_tensors(tmp_path / "nope.safetensors")


def test_resume_with_a_different_model_config_is_an_error(tmp_path):
    Trainer(tiny_config({"train.max_steps": 1}), tmp_path, progress=False).run()
    with pytest.raises(CheckpointError, match="different recipe.*model.num_res_blocks: 1 in the checkpoint, 2 now"):
        Trainer(tiny_config({"model.num_res_blocks": 2}), tmp_path, resume=True, progress=False)


def test_existing_run_without_resume_is_an_error(tmp_path, capsys):
    config = write_tiny_yaml(tmp_path / "tiny.yaml", {"train.max_steps": 2})
    args = ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run' / CHECKPOINT} exists" in err and "--resume" in err
    with pytest.raises(FileExistsError):
        Trainer(tiny_config(), tmp_path / "run", progress=False)
    assert main([*args, "--resume", "--max-steps", "3"]) == 0
    assert checkpoint_step(tmp_path / "run" / CHECKPOINT) == 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    """torchrun with 2 gloo processes, each taking half of every global batch, ends where 1 process does.

    lr is small because Adam turns rounding noise in mathematically-zero gradients (biases in front of a
    one-channel-per-group GroupNorm) into updates of up to lr * |noise| / eps; at lr 1e-5 they stay near
    1e-8, while a rank training on the wrong data moves weights by ~lr per step.
    """
    config = write_tiny_yaml(tmp_path / "tiny.yaml", {"train.max_steps": 3, "train.ckpt_every": 3,
                                                      "train.batch_size": 8, "train.lr": 1e-5})
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "glide_minimal.cli", "train", "--config", str(config),
           "--out", str(tmp_path / "ddp"), "--threads", "1", "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    Trainer(load_config(config), tmp_path / "one", device="cpu", progress=False).run()
    ddp, meta = load_tensors(tmp_path / "ddp" / CHECKPOINT)
    one, _ = load_tensors(tmp_path / "one" / CHECKPOINT)
    assert meta["step"] == 3
    assert_same_tensors(ddp, one, exact=False, atol=1e-6)
    # the comparison has power: 3 steps moved the weights by far more than the tolerance
    init = Trainer(load_config(config), tmp_path / "init", device="cpu", progress=False).state_tensors()
    assert max((one[k] - init[k]).abs().max().item() for k in init if k.startswith("model/")) > 1e-5
    for a, b in zip(losses(tmp_path / "ddp"), losses(tmp_path / "one")):
        assert a == pytest.approx(b, abs=1e-5)  # logged losses are the all-reduced global mean


def test_resume_survives_a_partial_last_log_line(tmp_path):
    cfg = tiny_config({"train.max_steps": 2, "train.ckpt_every": 2})
    Trainer(cfg, tmp_path, progress=False).run()
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 0.9')  # the process died here
    trainer = Trainer(cfg, tmp_path, resume=True, progress=False)
    assert [r["step"] for r in log_rows(tmp_path)] == [1, 2]
    trainer.run(3)
    assert [r["step"] for r in log_rows(tmp_path)] == [1, 2, 3]
