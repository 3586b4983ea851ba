"""Inpainting masks and resizing between resolutions (glide_minimal/masks.py)."""
import pytest
import torch

from glide_minimal.masks import area_downsample, box_mask, downsample_mask, freeform_mask


@pytest.mark.parametrize("make", [box_mask, freeform_mask])
def test_masks_are_binary_seeded_and_consistent_across_resolutions(make):
    m64 = make(64, torch.Generator().manual_seed(3))
    m16 = make(16, torch.Generator().manual_seed(3))
    assert m64.shape == (1, 64, 64) and m16.shape == (1, 16, 16)
    assert set(m64.unique().tolist()) <= {0.0, 1.0} and 0.02 < (m64 == 0).float().mean() < 0.9
    torch.testing.assert_close(m16, downsample_mask(m64, 16))
    assert torch.equal(m64, make(64, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("make", [box_mask, freeform_mask])
def test_mask_size_must_divide_the_drawing(make):
    with pytest.raises(ValueError, match="image_size must divide 256 .*got 48"):
        make(48, torch.Generator().manual_seed(0))


def test_downsampled_mask_fills_every_pixel_that_touches_the_hole():
    mask = torch.ones(1, 64, 64)
    mask[:, 10, 10] = 0
    low = downsample_mask(mask, 16)
    assert low[0, 2, 2] == 0 and low.sum() == 16 * 16 - 1
    with pytest.raises(ValueError, match="cannot downsample a 64 px mask to 48 px"):
        downsample_mask(mask, 48)


def test_area_downsample_averages_each_block():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    small = area_downsample(images, 2)
    assert small.shape == (2, 3, 2, 2)
    # the top-left 2x2 block of the first channel holds 0, 1, 4, 5
    assert small[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4
    assert torch.equal(area_downsample(images, 4), images)
    with pytest.raises(ValueError, match=r"cannot area-average \(4, 4\) images to 3 px"):
        area_downsample(images, 3)


def test_area_downsample_of_a_render_is_the_render_at_that_size():
    from glide_minimal.shapesworld import render_caption

    caption = "a small magenta triangle in the bottom left"
    torch.testing.assert_close(area_downsample(render_caption(caption, 64)[None], 16)[0], render_caption(caption, 16))
