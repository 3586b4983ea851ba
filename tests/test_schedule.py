"""Noise schedules and timestep respacing (glide_minimal/diffusion/schedule.py)."""
from __future__ import annotations

import numpy as np
import pytest

from glide_minimal.diffusion.schedule import get_named_beta_schedule, space_timesteps


@pytest.mark.parametrize(("num_timesteps", "first", "last"), [(1000, 1e-4, 0.02), (100, 1e-3, 0.2)])
def test_linear_betas_are_scaled_by_1000_over_T(num_timesteps, first, last):
    betas = get_named_beta_schedule("linear", num_timesteps)
    assert betas.dtype == np.float64
    assert betas.shape == (num_timesteps,)
    assert betas[0] == pytest.approx(first, rel=1e-12)
    assert betas[-1] == pytest.approx(last, rel=1e-12)
    assert np.all(np.diff(betas) > 0)


def test_linear_schedule_keeps_the_total_noise_of_a_1000_step_chain():
    # Rescaling by 1000/T keeps sum(beta) (and so roughly alpha-bar_T) the same for any T.
    assert get_named_beta_schedule("linear", 100).sum() == pytest.approx(get_named_beta_schedule("linear", 1000).sum(),
                                                                        rel=1e-3)


@pytest.mark.parametrize("num_timesteps", [1000, 50])
def test_cosine_alphas_cumprod_follow_the_cos2_closed_form(num_timesteps):
    """IDDPM Eq. (17): alpha-bar_t = f(t) / f(0), f(t) = cos^2((t/T + s) / (1 + s) * pi/2), s = 0.008."""
    T = num_timesteps
    betas = get_named_beta_schedule("squaredcos_cap_v2", T)
    f = lambda t: np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    closed_form = f(np.arange(1, T + 1)) / f(0)  # alpha-bar after steps 0..T-1
    capped = betas >= 0.999 - 1e-12
    first_capped = int(np.argmax(capped)) if capped.any() else T
    assert first_capped >= T - 2, "only the last steps, where alpha-bar -> 0, may hit the cap"
    alphas_cumprod = np.cumprod(1.0 - betas)
    np.testing.assert_allclose(alphas_cumprod[:first_capped], closed_form[:first_capped], rtol=1e-6, atol=1e-12)
    assert np.all(betas > 0) and np.all(betas <= 0.999)


def test_unknown_schedule_error_lists_the_schedules():
    with pytest.raises(ValueError, match="unknown noise schedule 'sigmoid'.*linear, squaredcos_cap_v2"):
        get_named_beta_schedule("sigmoid", 100)


def test_respacing_100_spans_the_whole_chain():
    steps = space_timesteps(1000, "100")
    assert len(steps) == 100
    assert steps[0] == 0 and steps[-1] == 999
    assert steps == sorted(set(steps))


def test_respacing_accepts_an_int_and_an_empty_spec():
    assert space_timesteps(1000, 100) == space_timesteps(1000, "100")
    assert space_timesteps(50, "") == list(range(50))
    assert space_timesteps(50, "50") == list(range(50))


def test_respacing_sections_take_the_requested_count_from_each_section():
    steps = space_timesteps(1000, "10,10,3,2,2")
    assert len(steps) == 27
    counts = [sum(lo <= s < lo + 200 for s in steps) for lo in range(0, 1000, 200)]
    assert counts == [10, 10, 3, 2, 2]
    # each section's steps run from its first to its last timestep
    assert {0, 199, 200, 399, 400, 599, 600, 799, 800, 999} <= set(steps)


def test_respacing_ddim50_is_every_20th_step():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))


def test_fast27_replaces_the_last_step_by_T_minus_3():
    steps = space_timesteps(1000, "fast27")
    assert len(steps) == 27
    assert 997 in steps and 999 not in steps
    # the schedule of the released GLIDE upsampler (glide_text2im's space_timesteps, T = 1000)
    assert steps == [0, 22, 44, 66, 88, 111, 133, 155, 177, 199, 200, 222, 244, 266, 288, 311, 333, 355, 377, 399,
                     400, 500, 599, 600, 799, 800, 997]


def test_ddim_count_that_no_stride_gives_is_an_error():
    # strides 1 and 2 of T=10 give 10 and 5 steps: 7 is impossible
    with pytest.raises(ValueError, match="cannot make exactly 7 evenly strided steps from T=10"):
        space_timesteps(10, "ddim7")


@pytest.mark.parametrize("spec", ["ddim", "ddim0", "ddim11", "ddimx"])
def test_bad_ddim_spec_error_gives_the_valid_range(spec):
    with pytest.raises(ValueError, match=r"use ddimN with 1 <= N <= 10"):
        space_timesteps(10, spec)


@pytest.mark.parametrize("spec", ["abc", "10,,3", "1.5"])
def test_unparseable_spec_error_shows_the_valid_forms(spec):
    with pytest.raises(ValueError, match=f"bad respacing '{spec}'.*'100'.*'10,10,3,2,2'.*'ddim50'.*'fast27'"):
        space_timesteps(1000, spec)


def test_section_asking_more_steps_than_it_has_is_an_error():
    # T=20 in five sections: four timesteps each, so ten cannot be taken from the first
    with pytest.raises(ValueError, match="cannot take 10 steps from a section of 4 timesteps"):
        space_timesteps(20, "10,10,3,2,2")


@pytest.mark.parametrize("spec", ["0", "2000"])
def test_step_count_outside_1_to_T_is_an_error(spec):
    with pytest.raises(ValueError, match=f"cannot take {spec} steps from a section of 1000 timesteps"):
        space_timesteps(1000, spec)


@pytest.mark.parametrize("num_timesteps", [10, 20])
def test_linear_schedule_with_too_few_steps_for_betas_below_one_is_an_error(num_timesteps):
    with pytest.raises(ValueError, match="num_timesteps"):
        get_named_beta_schedule("linear", num_timesteps)
