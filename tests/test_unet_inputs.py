"""The U-Net's cascade and editing inputs: super_res (low-res image) and inpaint (known image and mask)."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize_, tiny_config
from glide_minimal.cli import main
from glide_minimal.models import build_model, example_inputs
from glide_minimal.models.unet import input_channels


def model_and_inputs(super_res: bool = False, inpaint: bool = False, n: int = 2):
    cfg = tiny_config({"model.super_res": super_res, "model.inpaint": inpaint})
    model = randomize_(build_model(cfg)).eval()
    g = torch.Generator().manual_seed(0)
    size, c = cfg.model.image_size, cfg.model.in_channels
    x, t = torch.randn(n, c, size, size, generator=g), torch.randint(0, 50, (n,), generator=g)
    kwargs = {}
    if super_res:
        kwargs["low_res"] = torch.randn(n, c, size // 4, size // 4, generator=g)
    if inpaint:
        kwargs["inpaint_image"] = torch.randn(n, c, size, size, generator=g)
        kwargs["inpaint_mask"] = (torch.rand(n, 1, size, size, generator=g) > 0.5).float()
    return model, x, t, kwargs


@pytest.mark.parametrize("super_res, inpaint, extra",
                         [(False, False, 0), (True, False, 3), (False, True, 4), (True, True, 7)])
def test_in_channels_stays_x_t_and_the_model_adds_the_conditioning_channels(super_res, inpaint, extra):
    cfg = tiny_config({"model.in_channels": 3, "model.out_channels": 3, "model.super_res": super_res,
                       "model.inpaint": inpaint})
    assert input_channels(cfg.model) == 3 + extra  # the released 3 / 6 / 7 / 10
    assert build_model(cfg).input_blocks[0][0].weight.shape[1] == 3 + extra


def test_conditioning_channels_are_x_image_times_mask_mask_then_bilinear_low_res():
    """The released upsample-inpaint model's order; the low-res image is upsampled bilinearly, not nearest."""
    model, x, t, kw = model_and_inputs(super_res=True, inpaint=True)
    h = model.conditioning_inputs(x, kw["low_res"], kw["inpaint_image"], kw["inpaint_mask"])
    up = F.interpolate(kw["low_res"], size=x.shape[-2:], mode="bilinear", align_corners=False)
    expected = torch.cat([x, kw["inpaint_image"] * kw["inpaint_mask"], kw["inpaint_mask"], up], dim=1)
    assert torch.equal(h, expected)
    assert not torch.allclose(up, F.interpolate(kw["low_res"], size=x.shape[-2:], mode="nearest"))


def test_low_res_image_changes_the_output():
    model, x, t, kw = model_and_inputs(super_res=True)
    with torch.no_grad():
        a, b = model(x, t, **kw), model(x, t, low_res=kw["low_res"].flip(-1))
    assert (a - b).abs().max() > 1e-4


def test_inpaint_model_ignores_the_image_where_the_mask_is_zero():
    model, x, t, kw = model_and_inputs(inpaint=True)
    hidden = kw["inpaint_image"] + 5.0 * (1 - kw["inpaint_mask"])  # changed only where the mask says "fill"
    shown = kw["inpaint_image"] + 5.0 * kw["inpaint_mask"]  # changed where the mask says "keep"
    with torch.no_grad():
        out = model(x, t, **kw)
        assert torch.allclose(out, model(x, t, inpaint_image=hidden, inpaint_mask=kw["inpaint_mask"]), atol=1e-6)
        assert (out - model(x, t, inpaint_image=shown, inpaint_mask=kw["inpaint_mask"])).abs().max() > 1e-4


def test_missing_low_res_error_says_what_to_pass():
    model, x, t, _ = model_and_inputs(super_res=True)
    with pytest.raises(ValueError, match=re.escape("pass low_res [N, 1, h, w]")):
        model(x, t)


def test_missing_mask_error_says_what_to_pass():
    model, x, t, kw = model_and_inputs(inpaint=True)
    with pytest.raises(ValueError, match=re.escape("inpaint_mask [N, 1, 8, 8] (1 = known, 0 = fill")):
        model(x, t, inpaint_image=kw["inpaint_image"])


def test_wrong_mask_shape_error_names_both_shapes():
    model, x, t, kw = model_and_inputs(inpaint=True)
    with pytest.raises(ValueError,
                       match=re.escape("inpaint_mask has shape (2, 1, 4, 4) but the image is (2, 1, 8, 8)")):
        model(x, t, inpaint_image=kw["inpaint_image"], inpaint_mask=torch.ones(2, 1, 4, 4))


def test_wrong_low_res_channels_error_names_the_shape():
    model, x, t, kw = model_and_inputs(super_res=True)
    with pytest.raises(ValueError, match=re.escape("low_res has shape (2, 3, 2, 2)")):
        model(x, t, low_res=torch.zeros(2, 3, 2, 2))


def test_plain_model_refuses_cascade_and_editing_inputs():
    model, x, t, _ = model_and_inputs()
    with pytest.raises(ValueError, match="does not upsample"):
        model(x, t, low_res=torch.zeros(2, 1, 2, 2))
    with pytest.raises(ValueError, match="does not inpaint"):
        model(x, t, inpaint_mask=torch.ones(2, 1, 8, 8))


def test_example_inputs_fit_every_variant():
    for super_res, inpaint in [(True, False), (False, True), (True, True)]:
        cfg = tiny_config({"model.super_res": super_res, "model.inpaint": inpaint})
        x, t, kwargs = example_inputs(cfg, batch=2)
        assert build_model(cfg)(x, t, **kwargs).shape == x.shape


def test_info_counts_the_released_inpainting_upsampler(capsys):
    assert main(["info", "--config", "glide-filtered-upsample-inpaint"]) == 0
    assert "398,368,198" in capsys.readouterr().out
