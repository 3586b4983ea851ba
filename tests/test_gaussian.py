"""The Gaussian diffusion process and its losses (glide_minimal/diffusion/gaussian.py).

Reference values are computed here, independently, in float64 from the betas: alpha-bar by cumprod,
the posterior by Bayes' rule on two Gaussians, KLs from the Gaussian formula.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glide_minimal.diffusion import GaussianDiffusion
from glide_minimal.diffusion.schedule import get_named_beta_schedule, space_timesteps

T = 100
TABLES = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
          "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2")


@pytest.fixture
def betas() -> np.ndarray:
    return get_named_beta_schedule("linear", T)


def column(values, like: torch.Tensor) -> torch.Tensor:
    """Per-example scalars [N] -> [N, 1, 1, 1] in like's dtype."""
    return torch.as_tensor(np.asarray(values), dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def data(*shape, seed=0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)


def bayes_posterior(betas: np.ndarray, x_start: torch.Tensor, x_t: torch.Tensor, t: list[int]):
    """q(x_{t-1} | x_t, x_0) for t >= 1: prior N(sqrt(abar_{t-1}) x_0, 1 - abar_{t-1}) on x_{t-1}, times the
    likelihood N(x_t; sqrt(alpha_t) x_{t-1}, beta_t), renormalised. Returns mean, variance [N, 1, 1, 1]."""
    abar = np.cumprod(1.0 - betas)
    a_prev = abar[np.array(t) - 1]
    alpha, beta = 1.0 - betas[t], betas[t]
    precision = 1.0 / (1.0 - a_prev) + alpha / beta
    variance = column(1.0 / precision, x_t)
    mean = variance * (column(np.sqrt(a_prev) / (1.0 - a_prev), x_t) * x_start
                       + column(np.sqrt(alpha) / beta, x_t) * x_t)
    return mean, variance


def gaussian_kl(mean1, var1, mean2, var2):
    return 0.5 * (torch.log(var2 / var1) + var1 / var2 + (mean1 - mean2) ** 2 / var2 - 1.0)


# -- forward process ----------------------------------------------------------------------------------

def test_q_sample_matches_the_closed_form(betas):
    d = GaussianDiffusion(betas)
    x_start, noise = data(4, 2, 3, 3, seed=0), data(4, 2, 3, 3, seed=1)
    t = [0, 10, 50, T - 1]
    abar = np.cumprod(1.0 - betas)[t]
    expected = column(np.sqrt(abar), x_start) * x_start + column(np.sqrt(1.0 - abar), x_start) * noise
    torch.testing.assert_close(d.q_sample(x_start, torch.tensor(t), noise), expected, rtol=1e-12, atol=1e-12)


def test_q_sample_noise_comes_from_the_generator(betas):
    d = GaussianDiffusion(betas)
    x_start, t = data(2, 1, 4, 4), torch.tensor([5, 60])
    a = d.q_sample(x_start, t, generator=torch.Generator().manual_seed(3))
    b = d.q_sample(x_start, t, generator=torch.Generator().manual_seed(3))
    c = d.q_sample(x_start, t, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_q_posterior_matches_bayes_rule_on_gaussians(betas):
    d = GaussianDiffusion(betas)
    x_start, x_t = data(4, 2, 3, 3, seed=0), data(4, 2, 3, 3, seed=1)
    t = [1, 5, 50, T - 1]
    mean, variance, log_variance = d.q_posterior_mean_variance(x_start, x_t, torch.tensor(t))
    expected_mean, expected_var = bayes_posterior(betas, x_start, x_t, t)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(variance, expected_var, rtol=1e-9, atol=0)
    torch.testing.assert_close(log_variance, torch.log(expected_var), rtol=1e-9, atol=1e-12)


def test_q_posterior_at_t0_returns_x_start_with_a_clipped_finite_log_variance(betas):
    d = GaussianDiffusion(betas)
    x_start, x_t = data(1, 1, 3, 3, seed=0), data(1, 1, 3, 3, seed=1)
    mean, variance, log_variance = d.q_posterior_mean_variance(x_start, x_t, torch.tensor([0]))
    torch.testing.assert_close(mean, x_start)
    assert variance.item() == 0.0
    abar = np.cumprod(1.0 - betas)
    beta_tilde_1 = betas[1] * (1.0 - abar[0]) / (1.0 - abar[1])
    assert log_variance.item() == pytest.approx(math.log(beta_tilde_1), rel=1e-12)


# -- respacing ----------------------------------------------------------------------------------------

def test_respaced_chain_over_every_timestep_equals_the_original(betas):
    full = GaussianDiffusion(betas)
    respaced = GaussianDiffusion(betas, use_timesteps=range(T))
    assert respaced.num_timesteps == T and respaced.timestep_map == list(range(T))
    for name in TABLES:
        np.testing.assert_allclose(getattr(respaced, name), getattr(full, name), rtol=1e-10, atol=1e-15, err_msg=name)


def test_respaced_chain_keeps_alphas_cumprod_at_the_kept_steps(betas):
    keep = space_timesteps(T, "10")
    full = GaussianDiffusion(betas)
    respaced = GaussianDiffusion(betas, use_timesteps=keep)
    assert respaced.num_timesteps == 10 and respaced.timestep_map == keep
    np.testing.assert_allclose(respaced.alphas_cumprod, full.alphas_cumprod[keep], rtol=1e-12)
    # so q(x_t | x_0) of the short chain's step i is the full chain's q at keep[i]
    x_start, noise = data(10, 1, 2, 2, seed=0), data(10, 1, 2, 2, seed=1)
    i = torch.arange(10)
    torch.testing.assert_close(respaced.q_sample(x_start, i, noise), full.q_sample(x_start, torch.tensor(keep), noise))


def test_respacing_outside_the_chain_is_an_error(betas):
    with pytest.raises(ValueError, match=r"use_timesteps must lie in \[0, 100\)"):
        GaussianDiffusion(betas, use_timesteps=[0, 50, 100])


def test_model_is_called_with_the_original_timestep_under_respacing(betas):
    keep = space_timesteps(T, "10")
    d = GaussianDiffusion(betas, use_timesteps=keep)
    seen = []

    def model_fn(x, t):
        seen.append(t.tolist())
        return torch.zeros_like(x)

    x = data(3, 1, 2, 2)
    d.p_mean_variance(model_fn, x, torch.tensor([0, 3, 9]))
    d.training_losses(model_fn, x, torch.tensor([1, 4, 8]))
    assert seen == [[keep[0], keep[3], keep[9]], [keep[1], keep[4], keep[8]]]


# -- the reverse process's variance -------------------------------------------------------------------

@pytest.mark.parametrize("v", [-1.0, 0.0, 1.0])
def test_learned_range_interpolates_log_variance_from_beta_tilde_to_beta(betas, v):
    t = [0, 7, T - 1]
    x, eps = data(3, 2, 2, 2, seed=0), data(3, 2, 2, 2, seed=1)
    learned = GaussianDiffusion(betas, "learned_range", "hybrid")
    out = learned.p_mean_variance_from_output(torch.cat([eps, torch.full_like(eps, v)], dim=1), x, torch.tensor(t))
    fixed_small = GaussianDiffusion(betas, "fixed_small").p_mean_variance_from_output(eps, x, torch.tensor(t))
    log_beta = column(np.log(betas[t]), x).expand_as(x)
    expected = {-1.0: fixed_small["log_variance"], 1.0: log_beta,
                0.0: 0.5 * (fixed_small["log_variance"] + log_beta)}[v]
    torch.testing.assert_close(out["log_variance"], expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["variance"], torch.exp(expected))
    torch.testing.assert_close(out["mean"], fixed_small["mean"])  # v changes the variance only


def test_fixed_large_uses_beta_except_beta_tilde_1_at_t0(betas):
    d = GaussianDiffusion(betas, "fixed_large")
    x, eps = data(3, 1, 2, 2, seed=0), data(3, 1, 2, 2, seed=1)
    out = d.p_mean_variance_from_output(eps, x, torch.tensor([0, 1, 50]))
    abar = np.cumprod(1.0 - betas)
    beta_tilde_1 = betas[1] * (1.0 - abar[0]) / (1.0 - abar[1])
    torch.testing.assert_close(out["variance"][:, 0, 0, 0], torch.tensor([beta_tilde_1, betas[1], betas[50]],
                                                                         dtype=torch.float64))


def test_model_output_with_the_wrong_channel_count_is_an_error(betas):
    x = data(2, 3, 2, 2)
    with pytest.raises(ValueError, match="learned_range needs a model output of 6 channels"):
        GaussianDiffusion(betas, "learned_range").p_mean_variance_from_output(x, x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="fixed_small needs a model output of 3 channels, got 6"):
        GaussianDiffusion(betas).p_mean_variance_from_output(torch.cat([x, x], 1), x, torch.tensor([1, 2]))


# -- losses -------------------------------------------------------------------------------------------

def test_mse_loss_equals_the_manual_l_simple(betas):
    d = GaussianDiffusion(betas)
    x_start, noise, t = data(3, 2, 4, 4, seed=0), data(3, 2, 4, 4, seed=1), [0, 30, 99]
    model_fn = lambda x, t: 0.5 * x  # noqa: E731  any prediction that depends on x_t
    terms = d.training_losses(model_fn, x_start, torch.tensor(t), noise)
    abar = np.cumprod(1.0 - betas)[t]
    x_t = column(np.sqrt(abar), x_start) * x_start + column(np.sqrt(1 - abar), x_start) * noise
    expected = ((noise - 0.5 * x_t) ** 2).mean(dim=(1, 2, 3))
    assert set(terms) == {"loss", "mse"}
    torch.testing.assert_close(terms["mse"], expected)
    torch.testing.assert_close(terms["loss"], expected)


def test_hybrid_vb_trains_only_the_variance_channels(betas):
    d = GaussianDiffusion(betas, "learned_range", "hybrid")
    n, c = 4, 2
    x_start, noise, t = data(n, c, 3, 3, seed=0).clamp(-1, 1), data(n, c, 3, 3, seed=1), torch.tensor([0, 3, 40, 99])
    output = torch.nn.Parameter(0.5 * data(n, 2 * c, 3, 3, seed=2))
    model_fn = lambda x, t: output  # noqa: E731  the model output is the parameter itself

    terms = d.training_losses(model_fn, x_start, t, noise)
    assert set(terms) == {"loss", "mse", "vb"}
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    terms["loss"].sum().backward()
    # d/d eps of mean((noise - eps)^2) is 2 (eps - noise) / D: the eps channels see L_simple only
    per_example = c * 3 * 3
    torch.testing.assert_close(output.grad[:, :c], 2 * (output.detach()[:, :c] - noise) / per_example)
    # the variance channels see L_vlb only
    (vb_grad,) = torch.autograd.grad(d.training_losses(model_fn, x_start, t, noise)["vb"].sum(), output)
    assert vb_grad[:, :c].abs().max() == 0
    assert vb_grad[:, c:].abs().min() > 0
    torch.testing.assert_close(output.grad[:, c:], vb_grad[:, c:])


def test_hybrid_vb_is_the_gaussian_kl_in_bits_weighted_by_T_over_1000(betas):
    d = GaussianDiffusion(betas, "learned_range", "hybrid")
    t = [1, 20, 60, T - 1]
    x_start, noise = data(4, 1, 3, 3, seed=0).clamp(-1, 1), data(4, 1, 3, 3, seed=1)
    eps, v = data(4, 1, 3, 3, seed=2), data(4, 1, 3, 3, seed=3).tanh()
    terms = d.training_losses(lambda x, tt: torch.cat([eps, v], 1), x_start, torch.tensor(t), noise)

    abar = np.cumprod(1.0 - betas)
    x_t = column(np.sqrt(abar[t]), x_start) * x_start + column(np.sqrt(1 - abar[t]), x_start) * noise
    true_mean, true_var = bayes_posterior(betas, x_start, x_t, t)
    pred_xstart = (x_t - column(np.sqrt(1 - abar[t]), x_t) * eps) / column(np.sqrt(abar[t]), x_t)  # not clipped
    model_mean, _ = bayes_posterior(betas, pred_xstart, x_t, t)
    frac = (v + 1) / 2
    model_log_var = frac * column(np.log(betas[t]), x_t) + (1 - frac) * torch.log(true_var)
    kl = gaussian_kl(true_mean, true_var, model_mean, torch.exp(model_log_var)).mean(dim=(1, 2, 3)) / math.log(2)
    # training_losses evaluates L_vlb in float32 (it may run under autocast)
    torch.testing.assert_close(terms["vb"].double(), kl * T / 1000, rtol=1e-4, atol=1e-7)


def test_calc_bpd_loop_total_is_the_sum_of_vb_terms_and_prior(betas):
    d = GaussianDiffusion(get_named_beta_schedule("squaredcos_cap_v2", 20))
    x_start = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1).round(decimals=2)
    out = d.calc_bpd_loop(lambda x, t: 0.1 * x, x_start, generator=torch.Generator().manual_seed(1))
    assert out["vb"].shape == (2, 20) and out["mse"].shape == (2, 20)
    assert torch.isfinite(out["total_bpd"]).all()
    assert (out["vb"] >= 0).all() and (out["prior_bpd"] >= 0).all()
    torch.testing.assert_close(out["total_bpd"], out["vb"].sum(dim=1) + out["prior_bpd"])


# -- guidance hooks -----------------------------------------------------------------------------------

def test_condition_mean_shifts_the_mean_by_variance_times_gradient(betas):
    d = GaussianDiffusion(betas)
    x, eps, t = data(3, 1, 2, 2, seed=0), data(3, 1, 2, 2, seed=1), torch.tensor([1, 10, 90])
    out = d.p_mean_variance_from_output(eps, x, t)
    shifted = d.condition_mean(lambda x, t: torch.full_like(x, 0.7), out, x, t)
    torch.testing.assert_close(shifted - out["mean"], out["variance"] * 0.7)


def test_condition_score_shifts_eps_by_sqrt_one_minus_abar_times_gradient(betas):
    d = GaussianDiffusion(betas)
    x, eps, t = data(3, 1, 2, 2, seed=0), data(3, 1, 2, 2, seed=1), torch.tensor([1, 10, 90])
    out = d.p_mean_variance_from_output(eps, x, t, clip_denoised=False)
    shifted = d.condition_score(lambda x, t: torch.full_like(x, 0.7), out, x, t)
    abar = np.cumprod(1.0 - betas)[[1, 10, 90]]
    torch.testing.assert_close(shifted["eps"], eps - column(np.sqrt(1 - abar), x) * 0.7)
    torch.testing.assert_close(shifted["pred_xstart"], d.predict_xstart_from_eps(x, t, shifted["eps"]))


def test_hybrid_loss_without_learned_variance_is_an_error(betas):
    with pytest.raises(ValueError, match="hybrid' needs model_var_type 'learned_range'"):
        GaussianDiffusion(betas, "fixed_small", "hybrid")


@pytest.mark.parametrize("var_type, loss_type", [("fixed_small", "mse"), ("learned_range", "hybrid")])
def test_v_prediction_oracle_recovers_x_start_and_eps_and_has_zero_mse(betas, var_type, loss_type):
    diffusion = GaussianDiffusion(betas, var_type, loss_type, model_mean_type="v")
    x_start, noise = data(4, 3, 8, 8, seed=1).clamp(-1, 1), data(4, 3, 8, 8, seed=2)
    t = torch.tensor([0, 10, len(betas) // 2, len(betas) - 1])
    a, s = column(np.sqrt(np.cumprod(1 - betas))[t], x_start), column(np.sqrt(1 - np.cumprod(1 - betas))[t], x_start)
    v = a * noise - s * x_start  # Salimans & Ho (2022): v = sqrt(abar) eps - sqrt(1 - abar) x_0
    extra = torch.zeros_like(v) if var_type == "learned_range" else v[:, :0]

    def oracle(x_t, timesteps):
        return torch.cat([v, extra], dim=1)

    out = diffusion.p_mean_variance(oracle, diffusion.q_sample(x_start, t, noise), t, clip_denoised=False)
    torch.testing.assert_close(out["pred_xstart"], x_start)
    torch.testing.assert_close(out["eps"], noise)
    losses = diffusion.training_losses(oracle, x_start, t, noise)
    assert losses["mse"].abs().max() < 1e-12
    eps_chain = GaussianDiffusion(betas, var_type, loss_type)  # the same oracle read as eps is wrong
    assert eps_chain.training_losses(oracle, x_start, t, noise)["mse"].max() > 0.1


def test_unknown_model_mean_type_is_named(betas):
    with pytest.raises(ValueError, match="unknown model_mean_type 'x0'; choose one of: eps, v"):
        GaussianDiffusion(betas, model_mean_type="x0")
