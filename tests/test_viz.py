"""The sliders over precomputed frames (gm.viz.FrameSlider): every combination drawn once, one control per
name, the HTML a static page needs (scripts/check_pages.py moves them in a browser)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")  # noqa: E402  (tests draw off screen)
import matplotlib.pyplot as plt
import pytest
import torch

from glide_minimal import viz


def _draw_counter(calls):
    def draw(*values):
        calls.append(values)
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.text(0.5, 0.5, str(values))
        return fig
    return draw


def test_every_combination_is_drawn_once_and_embedded_as_a_png():
    calls, open_before = [], set(plt.get_fignums())  # other tests may leave figures open
    slider = viz.FrameSlider({"scale": [0, 1.5, 3], "method": ["model", "replace"]}, _draw_counter(calls),
                             value={"scale": 1.5})
    assert sorted(calls) == sorted((s, m) for s in (0, 1.5, 3) for m in ("model", "replace"))
    assert set(slider.frames) == {f"{i},{j}" for i in range(3) for j in range(2)}
    assert all(uri.startswith("data:image/png;base64,") for uri in slider.frames.values())
    assert len(set(slider.frames.values())) == 6  # each frame its own picture
    page = slider._repr_html_()
    ranges = re.findall(r'<input type="range" min="0" max="(\d)" step="1" value="(\d)" data-control="(\d)"', page)
    assert ranges == [("2", "1", "0"), ("1", "0", "1")]  # the start value of "scale" is 1.5, index 1
    assert f'<img src="{slider.frames["1,0"]}"' in page
    assert json.dumps(slider.frames) in page  # the script swaps among exactly these
    assert set(plt.get_fignums()) == open_before  # each figure was closed after it was encoded


def test_two_sliders_get_their_own_ids():
    a = viz.FrameSlider({"k": [1, 2]}, _draw_counter([]))
    b = viz.FrameSlider({"k": [1, 2]}, _draw_counter([]))
    assert a.id != b.id and f'id="{a.id}"' in a._repr_html_()


@pytest.mark.parametrize("controls, value, needle", [
    ({"k": []}, None, "at least one value"),
    ({"k": [1, 2]}, {"j": 1}, "unknown controls"),
    ({"k": [1, 2]}, {"k": 3}, "is not one of its values"),
])
def test_bad_controls_are_clear_errors(controls, value, needle):
    with pytest.raises(ValueError, match=needle):
        viz.FrameSlider(controls, _draw_counter([]), value=value)


def test_timestep_scrubber_spans_the_trajectory_first_to_last():
    steps = 40
    trajectory = SimpleNamespace(timesteps=list(range(999, -1, -25)), x_t=torch.zeros(steps, 2, 1, 4, 4),
                                 pred_xstart=torch.zeros(steps, 2, 1, 4, 4))
    slider = viz.timestep_scrubber(trajectory, num_frames=9)
    assert slider.controls["step"][0] == 0 and slider.controls["step"][-1] == steps - 1
    assert len(slider.frames) == 9
