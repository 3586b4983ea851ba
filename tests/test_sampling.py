"""Ancestral and DDIM sampling loops (glide_minimal/diffusion/sampling.py).

The analytic check: for data that is one known point x_0 = c, the exact eps-prediction is
eps(x_t, t) = (x_t - sqrt(abar_t) c) / sqrt(1 - abar_t). With it, every predicted x_0 is c, the sampler
returns c, and the ancestral sampler's x_t follow q(x_t | x_0 = c).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glide_minimal.diffusion import GaussianDiffusion, ddim_sample_loop, p_sample_loop
from glide_minimal.diffusion.schedule import get_named_beta_schedule, space_timesteps

T = 50
SHAPE = (4, 1, 4, 4)
SAMPLERS = {
    "ancestral": lambda d, fn, shape, **kw: p_sample_loop(d, fn, shape, **kw),
    "ddim": lambda d, fn, shape, **kw: ddim_sample_loop(d, fn, shape, eta=kw.pop("eta", 0.0), **kw),
}


def diffusion(respacing: str | None = "10") -> GaussianDiffusion:
    keep = None if respacing is None else space_timesteps(T, respacing)
    return GaussianDiffusion(get_named_beta_schedule("linear", T), use_timesteps=keep)


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic eps-prediction that depends on x_t and t."""
    return 0.5 * torch.tanh(x) + 0.01 * t.to(x.dtype).reshape(-1, 1, 1, 1)


def exact_eps_model(c: float):
    """The true eps of the one-point data set {c}; uses the ORIGINAL chain's alpha-bar at the timestep it gets."""
    abar = torch.from_numpy(np.cumprod(1.0 - get_named_beta_schedule("linear", T)))

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t].to(x.dtype).reshape(-1, 1, 1, 1)
        return (x - a.sqrt() * c) / (1 - a).sqrt()

    return model_fn


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_same_seed_gives_identical_samples(sampler):
    d = diffusion()
    a = SAMPLERS[sampler](d, toy_model, SHAPE, generator=gen(0), eta=1.0) if sampler == "ddim" else \
        SAMPLERS[sampler](d, toy_model, SHAPE, generator=gen(0))
    b = SAMPLERS[sampler](d, toy_model, SHAPE, generator=gen(0), eta=1.0) if sampler == "ddim" else \
        SAMPLERS[sampler](d, toy_model, SHAPE, generator=gen(0))
    assert torch.equal(a, b)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_different_seeds_give_different_samples(sampler):
    d = diffusion()
    a = SAMPLERS[sampler](d, toy_model, SHAPE, generator=gen(0))
    b = SAMPLERS[sampler](d, toy_model, SHAPE, generator=gen(1))
    assert (a - b).abs().mean() > 1e-2


def test_ddim_with_eta0_is_deterministic_given_the_initial_noise():
    d, noise = diffusion(), torch.randn(SHAPE, generator=gen(5))
    a = ddim_sample_loop(d, toy_model, SHAPE, noise=noise, eta=0.0, generator=gen(0))
    b = ddim_sample_loop(d, toy_model, SHAPE, noise=noise, eta=0.0, generator=gen(1))
    assert torch.equal(a, b)
    # while eta > 0 and ancestral sampling draw fresh noise at every step
    assert not torch.equal(ddim_sample_loop(d, toy_model, SHAPE, noise=noise, eta=1.0, generator=gen(0)),
                           ddim_sample_loop(d, toy_model, SHAPE, noise=noise, eta=1.0, generator=gen(1)))
    assert not torch.equal(p_sample_loop(d, toy_model, SHAPE, noise=noise, generator=gen(0)),
                           p_sample_loop(d, toy_model, SHAPE, noise=noise, generator=gen(1)))


@pytest.mark.parametrize("eta", [-0.5, float("nan"), float("inf"), 1.5, True])
def test_eta_outside_zero_one_is_an_error(eta):
    with pytest.raises(ValueError, match=r"eta must be a finite number in \[0, 1\]"):
        ddim_sample_loop(diffusion(), toy_model, SHAPE, eta=eta)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_trajectory_has_one_frame_per_step_with_original_timesteps(sampler):
    d = diffusion("10")
    x, traj = SAMPLERS[sampler](d, toy_model, SHAPE, generator=gen(0), return_trajectory=True)
    assert traj.x_t.shape == (10, *SHAPE) and traj.pred_xstart.shape == (10, *SHAPE)
    assert traj.timesteps == space_timesteps(T, "10")[::-1]
    assert torch.equal(traj.x_t[-1], x)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_sampler_passes_original_timesteps_to_the_model(sampler):
    d, seen = diffusion("10"), []

    def model_fn(x, t):
        assert len(set(t.tolist())) == 1
        seen.append(int(t[0]))
        return toy_model(x, t)

    SAMPLERS[sampler](d, model_fn, SHAPE, generator=gen(0))
    assert seen == space_timesteps(T, "10")[::-1]


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_cond_fn_pushes_samples_along_its_gradient(sampler):
    d, seen = diffusion("10"), []
    zero_eps = lambda x, t: torch.zeros_like(x)  # noqa: E731

    def push_up(x, t):
        seen.append(int(t[0]))
        return torch.full_like(x, 2.0)

    plain = SAMPLERS[sampler](d, zero_eps, SHAPE, generator=gen(0))
    guided = SAMPLERS[sampler](d, zero_eps, SHAPE, generator=gen(0), cond_fn=push_up)
    assert (guided - plain).mean() > 0.1
    assert seen == space_timesteps(T, "10")[::-1]  # cond_fn also gets the original timesteps


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
@pytest.mark.parametrize("respacing", [None, "10", "ddim5"])
def test_exact_eps_of_a_single_point_makes_the_sampler_return_it(sampler, respacing):
    c = 0.3
    d = diffusion(respacing)
    x, traj = SAMPLERS[sampler](d, exact_eps_model(c), SHAPE, generator=gen(0), return_trajectory=True)
    # a model called with the respaced index instead of the original timestep would predict x_0 != c
    torch.testing.assert_close(traj.pred_xstart, torch.full_like(traj.pred_xstart, c), rtol=0, atol=1e-3)
    torch.testing.assert_close(x, torch.full_like(x, c), rtol=0, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_exact_eps_sampler_visits_the_forward_marginals(sampler):
    """With the exact x_0, ancestral steps sample q(x_{t-1} | x_t, x_0) and DDIM steps keep the marginals,
    so x at every kept timestep s is distributed as q(x_s | x_0 = c) = N(sqrt(abar_s) c, 1 - abar_s)."""
    c, keep = 0.3, space_timesteps(T, "10")
    d = diffusion("10")
    _, traj = SAMPLERS[sampler](d, exact_eps_model(c), (1000, 1, 2, 2), generator=gen(0), return_trajectory=True)
    abar = np.cumprod(1.0 - get_named_beta_schedule("linear", T))
    for frame in (2, 5, 8):  # frame k holds x at the kept timestep before traj.timesteps[k]
        s = keep[len(keep) - 2 - frame]
        samples = traj.x_t[frame]
        assert samples.mean().item() == pytest.approx(np.sqrt(abar[s]) * c, abs=0.05)
        assert samples.std().item() == pytest.approx(np.sqrt(1 - abar[s]), rel=0.05)


def strong_tanh_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A stand-in whose predicted x_0 often leaves [-1, 1], so clip_denoised really clips."""
    return 3.0 * torch.tanh(2.0 * x) - 0.02 * t.to(x.dtype).reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
@pytest.mark.parametrize("clip_denoised", [True, False])
def test_a_zero_gradient_guide_is_a_no_op(sampler, clip_denoised):
    """guidance at scale 0 must leave the run unchanged: the DDIM score shift has to start from the eps
    that the (clipped) x_0 implies, not from the raw model eps (guided-diffusion, GLIDE)."""
    d = diffusion("10")
    zero = lambda x, t, **_: torch.zeros_like(x)
    plain = SAMPLERS[sampler](d, strong_tanh_model, SHAPE, generator=gen(3), clip_denoised=clip_denoised)
    guided = SAMPLERS[sampler](d, strong_tanh_model, SHAPE, generator=gen(3), clip_denoised=clip_denoised,
                               cond_fn=zero)
    assert (guided - plain).abs().max() < 1e-6 * max(1.0, plain.abs().max().item())  # float rounding only


def test_ddim_guidance_shifts_the_clipped_eps():
    """condition_score: eps' = eps(x_t, clipped x_0) - sqrt(1 - abar) grad; checked against the formula."""
    d = diffusion("10")
    x, t = torch.randn(SHAPE, generator=gen(1)) * 3, torch.full((SHAPE[0],), 7, dtype=torch.long)
    out = d.p_mean_variance(strong_tanh_model, x, t, clip_denoised=True)
    shifted = d.condition_score(lambda y, s, **_: torch.full_like(y, 0.5), out, x, t)
    abar = torch.tensor(d.alphas_cumprod[7], dtype=x.dtype)
    eps_clipped = (x - abar.sqrt() * out["pred_xstart"]) / (1 - abar).sqrt()
    assert (shifted["eps"] - (eps_clipped - (1 - abar).sqrt() * 0.5)).abs().max() < 1e-5


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
@pytest.mark.parametrize("respacing", ["1", "ddim1"])
def test_one_step_chains_sample(sampler, respacing):
    """One step from x_T: the model's x_0 at once (the posterior mean at t = 0 is x_0 itself)."""
    d = diffusion(respacing)
    assert d.num_timesteps == 1
    c = 0.25
    out = SAMPLERS[sampler](d, exact_eps_model(c), SHAPE, generator=gen(0))
    assert torch.isfinite(out).all() and (out - c).abs().max() < 1e-4


def test_a_one_step_diffusion_builds_and_samples():
    d = GaussianDiffusion(get_named_beta_schedule("squaredcos_cap_v2", 1))
    assert np.isfinite(d.posterior_log_variance_clipped).all() and np.isfinite(d.large_log_variance_table).all()
    out = p_sample_loop(d, toy_model, SHAPE, generator=gen(0))
    assert out.shape == SHAPE and torch.isfinite(out).all()
