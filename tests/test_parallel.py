"""Multi-GPU training pieces, checked on the CPU: gradient accumulation and activation checkpointing give
the update of a plain step, FSDP and DDP over two gloo processes give one process's update, FSDP
checkpoints resume exactly, and the new config keys fail with errors that name the value
(glide_minimal/parallel.py, glide_minimal/train.py)."""
from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_same_tensors, subprocess_env, tiny_config, tiny_text_config, write_tiny_yaml
from glide_minimal.checkpoint import load_tensors
from glide_minimal.config import load_config
from glide_minimal.models import build_model, example_inputs
from glide_minimal.parallel import blocks, enable_activation_checkpointing
from glide_minimal.train import CHECKPOINT, Trainer

# As in test_train's DDP test: a small lr, so that Adam's amplification of rounding noise in gradients that
# are mathematically zero stays far below the tolerance, while real differences (wrong data, a lost
# micro-batch) move weights by about lr per step.
SMALL_LR = {"train.batch_size": 8, "train.lr": 1e-5, "train.max_steps": 3, "train.ckpt_every": 3}


def model_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run_dir / CHECKPOINT)[0]


def logged_losses(run_dir: Path) -> list[float]:
    return [json.loads(row)["loss"] for row in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_moved(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor], more_than: float = 1e-5) -> None:
    """The comparison has power: training moved some weight by far more than the tolerance."""
    moved = max((after[k] - before[k]).abs().max().item() for k in before if k.startswith("model/"))
    assert moved > more_than, f"the weights moved only {moved:.2g}: the test cannot tell runs apart"


# -- gradient accumulation ---------------------------------------------------------------------------

def test_four_micro_batches_give_the_weights_of_one_batch(tmp_path):
    one = Trainer(tiny_config(SMALL_LR), tmp_path / "one", progress=False)
    init = one.state_tensors()
    init = {k: v.clone() for k, v in init.items()}
    one.run()
    four = Trainer(tiny_config({**SMALL_LR, "train.grad_accum_steps": 4}), tmp_path / "four", progress=False)
    assert [len(m[1][0]) for m in four.micro_batches(*four.batch(0))] == [2, 2, 2, 2]
    four.run()
    assert_same_tensors(model_tensors(tmp_path / "four"), model_tensors(tmp_path / "one"), exact=False, atol=1e-6)
    assert_moved(model_tensors(tmp_path / "one"), init)
    # logged to 6 digits
    assert logged_losses(tmp_path / "four") == pytest.approx(logged_losses(tmp_path / "one"), abs=1e-5)


def test_micro_batches_split_per_example_kwargs_with_the_images():
    trainer = Trainer.__new__(Trainer)  # micro_batches needs only the config
    trainer.cfg = tiny_config({"train.grad_accum_steps": 2})
    x, t, noise = torch.arange(4.0)[:, None], torch.arange(4), torch.zeros(4, 1)
    kwargs = {"tokens": torch.arange(8).reshape(4, 2), "scale": torch.tensor(3.0)}
    (share_a, (xa, ta, _, ka)), (share_b, (xb, _, _, kb)) = trainer.micro_batches(x, t, noise, kwargs)
    assert share_a == share_b == 0.5
    assert xa[:, 0].tolist() == [0.0, 1.0] and xb[:, 0].tolist() == [2.0, 3.0] and ta.tolist() == [0, 1]
    assert ka["tokens"].tolist() == [[0, 1], [2, 3]] and kb["tokens"].tolist() == [[4, 5], [6, 7]]
    assert ka["scale"] is kwargs["scale"]  # not per-example: passed whole


# -- activation checkpointing ------------------------------------------------------------------------

@pytest.mark.parametrize("make_config", [tiny_config, tiny_text_config], ids=["unet", "text-unet"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(tmp_path, make_config):
    # Dropout on: the recomputation must draw the same masks as the forward did.
    overrides = {"model.dropout": 0.1, "train.max_steps": 1}
    plain = Trainer(make_config(overrides), tmp_path / "plain", progress=False)
    ckpt = Trainer(make_config({**overrides, "train.activation_checkpointing": True}), tmp_path / "ckpt",
                   progress=False)
    assert all(type(b).forward is not b.forward.__func__ for b in blocks(ckpt.model))  # every block is checkpointed
    row_plain, row_ckpt = plain.train_step(), ckpt.train_step()
    assert row_ckpt["loss"] == row_plain["loss"]
    assert row_ckpt["grad_norm"] == row_plain["grad_norm"]
    for (name, p), q in zip(plain.model.named_parameters(), ckpt.model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-7, msg=f"gradient of {name} differs")
    assert_same_tensors(ckpt.state_tensors(), plain.state_tensors())  # the same update, key for key


def _saved_bytes(model: torch.nn.Module, cfg) -> int:
    """Bytes autograd keeps for backward during one forward."""
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    x, t, kwargs = example_inputs(cfg, 4)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.randn_like(x), t, **kwargs)
    return total


def test_activation_checkpointing_keeps_less_for_backward():
    cfg = tiny_text_config()
    torch.manual_seed(0)
    model = build_model(cfg)
    plain = _saved_bytes(model, cfg)
    assert enable_activation_checkpointing(model) == len(blocks(model)) > 0
    assert _saved_bytes(model, cfg) < plain / 2


def test_a_checkpointed_model_deep_copies_into_an_independent_one():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg)
    enable_activation_checkpointing(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.1)
    x, t, _ = example_inputs(cfg, 2)
    x = torch.randn_like(x)
    # the copy's blocks run the copy's weights (a forward bound to the original would ignore the change)
    assert not torch.allclose(twin(x, t), model(x, t))
    block = blocks(twin)[0]
    assert block.forward.__self__ is block


# -- config keys -------------------------------------------------------------------------------------

def test_unknown_parallel_strategy_names_the_value_and_the_choices():
    with pytest.raises(ValueError, match=r"train.parallel = 'zero3' is not valid; choose one of: ddp, fsdp"):
        tiny_config({"train.parallel": "zero3"})


def test_grad_accum_steps_must_divide_the_batch():
    with pytest.raises(ValueError, match=r"train.grad_accum_steps 3 does not divide train.batch_size 8.*1, 2, 4, 8"):
        tiny_config({"train.grad_accum_steps": 3})
    with pytest.raises(ValueError, match=r"train.grad_accum_steps must be positive, got 0"):
        tiny_config({"train.grad_accum_steps": 0})


def test_activation_checkpointing_must_be_a_boolean():
    with pytest.raises(ValueError, match=r"train.activation_checkpointing must be true or false, got 'yes please'"):
        tiny_config({"train.activation_checkpointing": "yes please"})


def test_fsdp_with_fp16_is_an_error_that_names_the_alternatives():
    with pytest.raises(ValueError, match=r"fp16 is not supported with train.parallel fsdp.*bf16, fp32 or auto"):
        tiny_config({"train.parallel": "fsdp", "train.precision": "fp16"})


def test_clip_refuses_gradient_accumulation():
    with pytest.raises(ValueError, match=r"train.grad_accum_steps 2: CLIP's contrastive loss"):
        load_config("tutorial-text-clip", {"train.grad_accum_steps": 2})


def test_paper_base_config_trains_with_fsdp_and_checkpointing():
    train = load_config("glide-paper-base").train
    assert train.parallel == "fsdp" and train.activation_checkpointing
    assert train.batch_size % train.grad_accum_steps == 0


# -- two processes (torchrun, gloo) ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(config: Path, out: Path, *extra: str, cwd: Path) -> None:
    """`glide-minimal train` under torchrun with 2 CPU processes."""
    launcher = Path(sys.executable).with_name("torchrun")
    cmd = [str(launcher), "--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "glide_minimal.cli", "train", "--config", str(config),
           "--out", str(out), "--threads", "1", "--no-progress", "--device", "cpu", *extra]
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


# FSDP with everything on: each rank's 4 examples run as 2 micro-batches through checkpointed blocks.
FSDP = {**SMALL_LR, "train.parallel": "fsdp", "train.grad_accum_steps": 2, "train.activation_checkpointing": True}
PLAIN = {"train.parallel": "ddp", "train.grad_accum_steps": 1, "train.activation_checkpointing": False}


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> tuple[Path, Path]:
    """(config file, run folder) of a 3-step FSDP run over 2 processes."""
    root = tmp_path_factory.mktemp("fsdp")
    config = write_tiny_yaml(root / "tiny.yaml", FSDP)
    torchrun(config, root / "fsdp", cwd=root)
    return config, root / "fsdp"


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process(fsdp_run, tmp_path):
    config, run = fsdp_run
    one = Trainer(load_config(config, PLAIN), tmp_path / "one", device="cpu", progress=False)
    init = {k: v.clone() for k, v in one.state_tensors().items()}
    one.run()
    fsdp, meta = load_tensors(run / CHECKPOINT)
    assert meta["step"] == 3 and meta["config"]["train"]["parallel"] == "fsdp"
    # the same keys (full, unsharded tensors; optimizer state by parameter index) and the same values
    assert_same_tensors(fsdp, model_tensors(tmp_path / "one"), exact=False, atol=1e-6)
    assert_moved(model_tensors(tmp_path / "one"), init)
    assert logged_losses(run) == pytest.approx(logged_losses(tmp_path / "one"), abs=1e-5)


@pytest.mark.slow
def test_fsdp_resume_continues_exactly(fsdp_run, tmp_path):
    config, straight = fsdp_run
    torchrun(config, tmp_path / "split", "--max-steps", "2", cwd=tmp_path)
    torchrun(config, tmp_path / "split", "--resume", cwd=tmp_path)  # every rank loads its shard from rank 0
    split, meta = load_tensors(tmp_path / "split" / CHECKPOINT)
    assert meta["step"] == 3
    assert_same_tensors(split, model_tensors(straight))  # bit for bit: model, EMA and AdamW moments
    assert logged_losses(tmp_path / "split") == logged_losses(straight)


@pytest.mark.slow
def test_two_process_ddp_with_accumulation_matches_one_process(tmp_path):
    config = write_tiny_yaml(tmp_path / "tiny.yaml", {**SMALL_LR, "train.grad_accum_steps": 2,
                                                      "train.activation_checkpointing": True})
    torchrun(config, tmp_path / "ddp", cwd=tmp_path)
    Trainer(load_config(config, PLAIN), tmp_path / "one", device="cpu", progress=False).run()
    assert_same_tensors(model_tensors(tmp_path / "ddp"), model_tensors(tmp_path / "one"), exact=False, atol=1e-6)
    assert logged_losses(tmp_path / "ddp") == pytest.approx(logged_losses(tmp_path / "one"), abs=1e-5)
