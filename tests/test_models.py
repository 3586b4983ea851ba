"""The ADM U-Net and its layers (glide_minimal/models)."""
from __future__ import annotations

import math
import re

import pytest
import torch

from conftest import randomize_, tiny_config, tiny_parameter_count, write_tiny_yaml
from glide_minimal.cli import main
from glide_minimal.config import available_configs, load_config
from glide_minimal.models import AttentionBlock, UNet, build_model, timestep_embedding


def inputs(cfg, n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    return (torch.randn(n, m.in_channels, m.image_size, m.image_size, generator=g),
            torch.randint(0, cfg.diffusion.num_timesteps, (n,), generator=g))


@pytest.mark.parametrize(("overrides", "out_channels"), [
    ({}, 1),
    ({"model.learn_sigma": True, "diffusion.model_var_type": "learned_range",
      "diffusion.loss_type": "hybrid"}, 2),
    ({"model.in_channels": 3, "model.out_channels": 3, "model.learn_sigma": True,
      "diffusion.model_var_type": "learned_range",
      "diffusion.loss_type": "hybrid"}, 6),
    ({"model.model_channels": 32, "model.channel_mult": [1, 2], "model.num_head_channels": 32, "model.image_size": 16,
      "data.image_size": 16, "model.attention_resolutions": [8], "model.resblock_updown": False}, 1),
])
def test_unet_output_shape_doubles_channels_with_learn_sigma(overrides, out_channels):
    cfg = tiny_config(overrides)
    x, t = inputs(cfg, n=3)
    out = UNet(cfg.model)(x, t)
    assert out.shape == (3, out_channels, cfg.model.image_size, cfg.model.image_size)


def test_fresh_unet_outputs_zeros():
    cfg = tiny_config()
    x, t = inputs(cfg)
    model = UNet(cfg.model)
    assert torch.equal(model(x, t), torch.zeros_like(x))
    # the zeros come from the zero-initialised last conv, not from a dead network
    randomize_(model.out)
    assert model(x, t).abs().min() > 0


def test_timestep_embedding_is_cos_then_sin():
    t = torch.tensor([0, 1, 250, 999])
    dim = 8
    emb = timestep_embedding(t, dim)
    assert emb.shape == (4, dim)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2) / (dim // 2))
    args = t[:, None].float() * freqs[None]
    torch.testing.assert_close(emb, torch.cat([torch.cos(args), torch.sin(args)], dim=1))
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_timestep_embedding_with_odd_dim_pads_one_zero():
    emb = timestep_embedding(torch.tensor([3, 7]), 7)
    assert emb.shape == (2, 7)
    assert torch.equal(emb[:, -1], torch.zeros(2))
    torch.testing.assert_close(emb[:, :6], timestep_embedding(torch.tensor([3, 7]), 6))


def test_attention_context_tokens_change_the_output():
    torch.manual_seed(0)
    block = AttentionBlock(32, num_head_channels=16, context_channels=8)
    x, context = torch.randn(2, 32, 4, 4), torch.randn(2, 8, 5)
    assert torch.equal(block(x, context), x)  # a fresh block is the identity (zero proj_out)
    randomize_(block.proj_out, scale=0.5)
    with_context, without = block(x, context), block(x)
    assert with_context.shape == x.shape
    assert (with_context - without).abs().max() > 1e-3


def test_attention_without_context_channels_refuses_a_context():
    block = AttentionBlock(32, num_head_channels=16)
    with pytest.raises(ValueError, match="without context_channels"):
        block(torch.randn(1, 32, 2, 2), torch.randn(1, 8, 3))


def test_wrong_input_shape_error_names_the_expected_shape():
    cfg = tiny_config()
    model = UNet(cfg.model)
    with pytest.raises(ValueError, match=re.escape("(2, 3, 8, 8) but this U-Net takes [N, 1, 8, 8]")):
        model(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))


def test_class_label_out_of_range_error_names_the_valid_range():
    cfg = tiny_config({"model.num_classes": 10})
    model = UNet(cfg.model)
    x, t = inputs(cfg)
    with pytest.raises(ValueError, match=r"label 11 out of range: valid labels are 0\.\.9, and 10 means 'no label'"):
        model(x, t, labels=torch.tensor([3, 11]))
    with pytest.raises(ValueError, match="label -1 out of range"):
        model(x, t, labels=torch.tensor([-1, 0]))
    assert model(x, t, labels=torch.tensor([9, 10])).shape == x.shape  # 10 is the null label


def test_class_conditional_model_without_labels_is_an_error():
    cfg = tiny_config({"model.num_classes": 10})
    with pytest.raises(ValueError, match="class-conditional: pass labels.*null label 10"):
        UNet(cfg.model)(*inputs(cfg))


def test_unconditional_model_with_labels_is_an_error():
    cfg = tiny_config()
    with pytest.raises(ValueError, match="unconditional.*got labels"):
        UNet(cfg.model)(*inputs(cfg), labels=torch.tensor([0, 1]))


def test_label_changes_the_output():
    cfg = tiny_config({"model.num_classes": 10})
    model = randomize_(UNet(cfg.model))
    x, t = inputs(cfg)
    assert (model(x, t, labels=torch.tensor([1, 1])) - model(x, t, labels=torch.tensor([2, 2]))).abs().max() > 1e-4


def test_parameter_count_is_the_count_by_hand_from_the_layer_shapes():
    assert sum(p.numel() for p in build_model(tiny_config()).parameters()) == tiny_parameter_count()


def test_build_model_on_meta_counts_parameters_without_memory():
    model = build_model(tiny_config(), device="meta")
    params = list(model.parameters())
    assert all(p.is_meta for p in params)
    assert sum(p.numel() for p in params) == tiny_parameter_count()


def test_meta_count_equals_a_real_model():
    cfg = tiny_config()
    meta = sum(p.numel() for p in build_model(cfg, device="meta").parameters())
    assert meta == sum(p.numel() for p in build_model(cfg).parameters())


def printed_parameters(out: str) -> int:
    """The count `glide-minimal info` prints."""
    printed = re.search(r"parameters\s+([\d,]+)", out)
    assert printed, f"glide-minimal info prints no parameter count:\n{out}"
    return int(printed.group(1).replace(",", ""))


def test_cli_info_prints_the_count_by_hand(tmp_path, capsys):
    assert main(["info", "--config", str(write_tiny_yaml(tmp_path / "tiny.yaml"))]) == 0
    assert printed_parameters(capsys.readouterr().out) == tiny_parameter_count()


@pytest.mark.parametrize("name", available_configs())
def test_every_shipped_config_builds_on_meta(name):
    params = list(build_model(load_config(name), device="meta").parameters())
    assert params and all(p.is_meta for p in params)


def test_widths_that_32_does_not_divide_build():
    # 16 + 32 = 48 channels meet in the decoder: GroupNorm falls back to gcd(32, 48) = 16 groups
    cfg = tiny_config({"model.model_channels": 16, "model.channel_mult": [1, 2, 3], "model.image_size": 16,
                       "data.image_size": 16})
    x, t = inputs(cfg)
    assert build_model(cfg)(x, t).shape == x.shape


def test_class_conditional_config_info_counts_parameters(tmp_path, capsys):
    # the label range check must not need values: `info` runs the model on the meta device
    tiny = str(write_tiny_yaml(tmp_path / "tiny.yaml"))
    assert main(["info", "--config", tiny, "--set", "model.num_classes=10"]) == 0
    # one embedding row per class + the null label, each 4 * 16 wide
    assert printed_parameters(capsys.readouterr().out) == tiny_parameter_count() + 11 * 64 == tiny_parameter_count(10)


def test_norm_groups_sets_every_groupnorm_of_the_unet():
    for groups, expected in [(32, 16), (8, 8), (4, 4)]:  # tiny widths 16 and 32: 32 groups -> gcd(32, 16) = 16
        model = build_model(tiny_config({"model.norm_groups": groups}))
        counts = {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm) and m.num_channels == 16}
        assert counts == {expected}
    with pytest.raises(ValueError, match="model.norm_groups"):
        tiny_config({"model.norm_groups": 0})


def test_every_tutorial_upsampler_config_keeps_several_channels_per_group():
    for name in available_configs():
        m = load_config(name).model
        if m.super_res and name.startswith("tutorial"):
            widths = {m.model_channels * k for k in m.channel_mult}
            assert all(w // math.gcd(m.norm_groups, w) >= 2 for w in widths), name
