"""`glide-minimal info --gpus N`: the per-GPU training memory arithmetic for DDP and FSDP, with and without
activation checkpointing, and which strategies fit an 80 GB card (glide_minimal/memory.py)."""
from __future__ import annotations

import re

import pytest
import torch

from conftest import tiny_config, tiny_parameter_count, tiny_text_config
from glide_minimal.cli import main
from glide_minimal.config import load_config
from glide_minimal.memory import GIB, PerGPU, _saved_bytes, footprint, per_gpu_memory
from glide_minimal.models import build_model, example_inputs


def rows_by_name(cfg, gpus: int) -> dict[str, PerGPU]:
    return {r.strategy: r for r in per_gpu_memory(cfg, gpus)}


def test_fsdp_keeps_one_nth_of_weights_grads_adamw_and_ema():
    cfg = tiny_config()
    p = tiny_parameter_count()  # by hand from the layer shapes (conftest)
    rows = rows_by_name(cfg, 4)
    ddp, fsdp = rows["DDP"], rows["FSDP (1/4)"]
    assert (ddp.weights, ddp.grads, ddp.adamw, ddp.ema) == (4 * p, 4 * p, 8 * p, 4 * p)
    assert (fsdp.weights, fsdp.grads, fsdp.adamw, fsdp.ema) == (4 * p / 4, 4 * p / 4, 8 * p / 4, 4 * p / 4)
    assert ddp.copies == 2 * p  # autocast's bf16 casts of the weights (precision auto: bf16 on a GPU)
    assert fsdp.copies > 0  # the units FSDP all-gathers
    fp32 = rows_by_name(tiny_config({"train.precision": "fp32"}), 4)
    assert fp32["DDP"].copies == 0 and fp32["FSDP (1/4)"].copies > 0
    for r in rows.values():
        assert r.total == pytest.approx(r.weights + r.grads + r.adamw + r.ema + r.activations + r.copies)


def test_checkpointing_changes_only_the_activations_and_lowers_them():
    rows = rows_by_name(tiny_text_config(), 2)
    for name in ("DDP", "FSDP (1/2)"):
        plain, ckpt = rows[name], rows[f"{name} + checkpointing"]
        assert (ckpt.weights, ckpt.grads, ckpt.adamw, ckpt.ema, ckpt.copies) == (
            plain.weights, plain.grads, plain.adamw, plain.ema, plain.copies)
        assert 0 < ckpt.activations < plain.activations / 2


def test_activations_follow_the_per_gpu_micro_batch_and_the_precision():
    cfg = tiny_config({"train.batch_size": 16})
    one = rows_by_name(cfg, 1)["DDP"].activations
    assert rows_by_name(cfg, 2)["DDP"].activations == pytest.approx(one / 2)  # 8 images per GPU instead of 16
    assert rows_by_name(tiny_config({"train.batch_size": 16, "train.grad_accum_steps": 4}), 1)["DDP"].activations == \
        pytest.approx(one / 4)
    fp32 = rows_by_name(tiny_config({"train.batch_size": 16, "train.precision": "fp32"}), 1)["DDP"].activations
    assert fp32 == pytest.approx(2 * one)  # precision auto: bf16 activations on a GPU
    assert footprint(cfg).activation_bytes * 16 == pytest.approx(fp32)


def test_meta_estimate_equals_what_autograd_keeps_on_a_real_forward():
    for cfg in (tiny_config(), tiny_text_config()):
        torch.manual_seed(0)
        x, t, kwargs = example_inputs(cfg, 1)
        real, _ = _saved_bytes(build_model(cfg), (x, t), kwargs)
        assert footprint(cfg).activation_bytes == pytest.approx(real, rel=0.02)


def test_a_card_fits_when_the_total_is_within_90_percent_of_80_gib():
    row = PerGPU("x", weights=72 * 2**30, grads=0, adamw=0, ema=0, activations=0, copies=0)  # 0.9 x 80 GiB
    assert row.fits()
    row.activations = 1.0  # one byte more
    assert not row.fits()
    assert not row.fits(card_bytes=40 * 2**30) and row.fits(card_bytes=81 * 2**30)


def test_fp32_rows_of_the_tiny_model_by_hand():
    # fp32 weights, gradients and EMA (4 bytes each) and AdamW's two moments (8 bytes) per parameter; no
    # bf16 copies under fp32; FSDP over 2 GPUs keeps half of each.
    p = tiny_parameter_count()
    rows = rows_by_name(tiny_config({"train.precision": "fp32"}), 2)
    assert (rows["DDP"].weights, rows["DDP"].grads, rows["DDP"].adamw, rows["DDP"].ema) == (4 * p, 4 * p, 8 * p, 4 * p)
    assert rows["DDP"].copies == 0
    assert rows["DDP"].total - rows["DDP"].activations == 20 * p == 4_167_380
    fsdp = rows["FSDP (1/2)"]
    assert (fsdp.weights, fsdp.grads, fsdp.adamw, fsdp.ema) == (2 * p, 2 * p, 4 * p, 2 * p)


def test_the_paper_model_needs_fsdp_and_checkpointing_on_64_gpus():
    rows = rows_by_name(load_config("glide-paper-base"), 64)
    assert {name for name, r in rows.items() if r.fits()} == {"FSDP (1/64) + checkpointing"}
    released = rows_by_name(load_config("glide-filtered-base"), 8)
    assert released["DDP"].fits()  # the released 385 M model trains with plain DDP


def test_bad_gpu_count_names_the_value():
    with pytest.raises(ValueError, match=r"gpus must be a positive integer, got 0"):
        per_gpu_memory(tiny_config(), 0)


def test_cli_info_prints_per_gpu_rows_and_the_assumptions(capsys):
    assert main(["info", "--config", "tutorial-ddpm", "--gpus", "4"]) == 0
    out = capsys.readouterr().out
    p = sum(q.numel() for q in build_model("tutorial-ddpm", device="meta").parameters())
    assert re.search(rf"^parameters\s+{p:,}$", out, re.MULTILINE)
    fsdp = re.search(r"^FSDP \(1/4\)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s.*\s(yes|no)$", out, re.MULTILINE)
    assert fsdp, out
    assert float(fsdp.group(1)) == pytest.approx(4 * p / 4 / GIB, abs=0.005)  # weights: total / N
    assert float(fsdp.group(3)) == pytest.approx(8 * p / 4 / GIB, abs=0.005)  # AdamW moments / N
    for name in ("DDP", "DDP + checkpointing", "FSDP (1/4) + checkpointing"):
        assert re.search(rf"^{re.escape(name)}\s", out, re.MULTILINE)
    assert "Assumptions" in out and "90 % of 80 GiB" in out and "16 images per GPU" in out


def test_cli_info_with_zero_gpus_exits_2_and_names_the_value(capsys):
    assert main(["info", "--config", "tutorial-ddpm", "--gpus", "0"]) == 2
    assert "--gpus 0 is not valid" in capsys.readouterr().err


def test_cli_info_sizes_a_clip_encoder(capsys):
    assert main(["info", "--config", "glide-filtered-clip-image", "--gpus", "2"]) == 0
    assert "86,443,776" in capsys.readouterr().out


def test_forward_flops_grow_with_batch_and_cover_every_conv_weight():
    from glide_minimal.memory import forward_flops

    cfg = tiny_text_config()
    one = forward_flops(cfg, 1)
    assert forward_flops(cfg, 3) == 3 * one
    # every conv weight is applied at least once per pixel of the lowest resolution (a multiply-add = 2 FLOPs)
    model = build_model(cfg, device="meta")
    lowest = (cfg.model.image_size // 2 ** (len(cfg.model.channel_mult) - 1)) ** 2
    conv_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert one >= 2 * conv_weights * lowest
    bigger = forward_flops(load_config("glide-filtered-base"), 1) / 1e9
    assert 200 < bigger < 300, bigger  # the released base model: about 240 GFLOP per 64 px image
