"""DPM-Solver++(2M) (glide_minimal/diffusion/sampling.py: dpm_solver_sample_loop, dpm_solver_step).

1. Step by step against diffusers' DPMSolverMultistepScheduler (algorithm_type="dpmsolver++",
   solver_order=2), both fed the same fixed random model outputs. Skipped without diffusers.
2. Convergence on Gaussian data, where the exact eps-prediction and the exact probability-flow ODE
   solution are both closed-form: the error is second order in the step size, and DDIM's is first order.
3. Model layouts (eps, v, learned sigma), clipping, denoised_fn, classifier-free guidance, one-step
   chains and bad inputs.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from glide_minimal.diffusion import (
    GaussianDiffusion,
    ddim_sample_loop,
    dpm_solver_sample_loop,
    dpm_solver_step,
    guidance,
)
from glide_minimal.diffusion.schedule import get_named_beta_schedule, space_timesteps

SHAPE = (2, 3, 4, 4)  # 3 channels: diffusers drops learned-sigma channels as model_output[:, :3]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def chain(schedule: str = "linear", T: int = 1000, keep: list[int] | None = None, **kwargs) -> GaussianDiffusion:
    return GaussianDiffusion(get_named_beta_schedule(schedule, T), use_timesteps=keep, **kwargs)


# ---- 1. against diffusers -------------------------------------------------------------------------------

def diffusers_scheduler(betas: np.ndarray, timesteps: list[int], prediction_type: str, *,
                        final_sigmas_type: str = "zero", lower_order_final: bool = False,
                        variance_type: str | None = None, float64_sigmas: bool = True):
    """DPMSolverMultistepScheduler over our betas (trained_betas) and our timesteps (descending).

    diffusers keeps alphas_cumprod and its sigma table (sigma = sqrt((1 - abar) / abar), their
    noise-to-signal ratio) in float32. Near t = 0, 1 - abar ~ 1e-4 keeps only about 3 significant digits,
    so the float32 table alone moves x by up to ~3e-5 relative. With float64_sigmas the table is
    replaced by the same values computed in float64 from the same betas. The test first checks that
    the two tables agree to float32 rounding, so the replacement changes only that rounding; the step
    logic (order choice, the updates) stays diffusers' own.
    """
    diffusers = pytest.importorskip("diffusers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy's __array__(copy=) notice inside diffusers
        sched = diffusers.DPMSolverMultistepScheduler(
            num_train_timesteps=len(betas), trained_betas=betas, prediction_type=prediction_type,
            algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
            lower_order_final=lower_order_final, final_sigmas_type=final_sigmas_type, variance_type=variance_type)
        sched.set_timesteps(timesteps=list(timesteps))
    assert sched.timesteps.tolist() == list(timesteps)
    if float64_sigmas:
        abar = np.cumprod(1.0 - betas)
        ratio = np.sqrt((1.0 - abar) / abar)
        last = 0.0 if final_sigmas_type == "zero" else ratio[0]
        exact = np.append(ratio[list(timesteps)], last)
        np.testing.assert_allclose(sched.sigmas.numpy(), exact, rtol=1e-3)
        sched.sigmas = torch.from_numpy(exact)
    return sched


def run_diffusers(sched, outputs: list[torch.Tensor], x_T: torch.Tensor) -> list[torch.Tensor]:
    """x after each scheduler.step, fed outputs[k] at step k."""
    x, xs = x_T.clone(), []
    for k, t in enumerate(sched.timesteps):
        x = sched.step(outputs[k], t, x).prev_sample
        xs.append(x)
    return xs


def run_ours(d: GaussianDiffusion, outputs: list[torch.Tensor], x_T: torch.Tensor) -> list[torch.Tensor]:
    """x after each step of dpm_solver_sample_loop, its model returning outputs[k] at call k."""
    expected_t = d.timestep_map[::-1]
    calls = []

    def model_fn(x, t):
        assert t.tolist() == [expected_t[len(calls)]] * x.shape[0]  # original timesteps, top down
        calls.append(1)
        return outputs[len(calls) - 1]

    _, traj = dpm_solver_sample_loop(d, model_fn, x_T.shape, noise=x_T.clone(), clip_denoised=False,
                                     return_trajectory=True, lower_order_final=False)  # Algorithm 2 as written
    assert len(calls) == d.num_timesteps  # one model call per step
    return list(traj.x_t)


def fixed_outputs(n: int, channels: int = SHAPE[1], seed: int = 1) -> list[torch.Tensor]:
    g = gen(seed)
    return [torch.randn(SHAPE[0], channels, *SHAPE[2:], generator=g, dtype=torch.float64) for _ in range(n)]


def assert_same_steps(ours: list[torch.Tensor], theirs: list[torch.Tensor], rel: float = 1e-5) -> float:
    """Every step within rel * max(1, |x|). The scale is there because diffusers casts the sample to float32
    inside step(), and random eps outputs at abar_T ~ 4e-5 give x_0 predictions of ~1/sqrt(abar_T) ~ 150,
    so eps runs reach |x| ~ 500 (v runs stay ~3, where this is an absolute 1e-5). Returns the worst ratio."""
    assert len(ours) == len(theirs)
    worst = 0.0
    for k, (a, b) in enumerate(zip(ours, theirs)):
        err = (a - b.to(a.dtype)).abs().max().item() / max(1.0, b.abs().max().item())
        assert err < rel, f"step {k}: relative difference {err:.2e}"
        worst = max(worst, err)
    return worst


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("respacing", ["10", "25"])
def test_every_step_matches_diffusers(schedule, prediction, respacing):
    """lower_order_final=False, final_sigmas_type="zero": first step first order, 2M after, the last step
    to sigma = 0 (which diffusers also takes at first order): identical at every step."""
    betas = get_named_beta_schedule(schedule, 1000)
    mean_type = "eps" if prediction == "epsilon" else "v"
    d = chain(schedule, keep=space_timesteps(1000, respacing), model_mean_type=mean_type)
    sched = diffusers_scheduler(betas, d.timestep_map[::-1], prediction)
    outputs, x_T = fixed_outputs(d.num_timesteps), torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    assert_same_steps(run_ours(d, outputs, x_T), run_diffusers(sched, outputs, x_T))


def test_learned_sigma_outputs_match_diffusers_learned_range():
    """2C output channels: both use the first C (eps) and ignore the variance values."""
    betas = get_named_beta_schedule("linear", 1000)
    d = chain(keep=space_timesteps(1000, "10"), model_var_type="learned_range")
    sched = diffusers_scheduler(betas, d.timestep_map[::-1], "epsilon", variance_type="learned_range")
    outputs = fixed_outputs(d.num_timesteps, 2 * SHAPE[1])
    x_T = torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    assert_same_steps(run_ours(d, outputs, x_T), run_diffusers(sched, outputs, x_T))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_diffusers_own_float32_tables_agree_to_their_precision(prediction):
    """No table replacement: diffusers' float32 sigmas from trained_betas, within 1e-4 relative."""
    betas = get_named_beta_schedule("linear", 1000)
    d = chain(keep=space_timesteps(1000, "10"), model_mean_type="eps" if prediction == "epsilon" else "v")
    sched = diffusers_scheduler(betas, d.timestep_map[::-1], prediction, float64_sigmas=False)
    outputs, x_T = fixed_outputs(d.num_timesteps), torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    assert_same_steps(run_ours(d, outputs, x_T), run_diffusers(sched, outputs, x_T), rel=1e-4)


def test_diffusers_default_linspace_timesteps_are_just_another_chain():
    """diffusers' default timesteps for 10 steps (linspace 999..100, no timestep 0) as our chain's kept
    timesteps: the same run, its last step the data prediction at timestep 100."""
    betas = get_named_beta_schedule("linear", 1000)
    default = np.linspace(0, 999, 11).round()[::-1][:-1].astype(int).tolist()
    d = chain(keep=default)
    sched = diffusers_scheduler(betas, default, "epsilon")
    outputs, x_T = fixed_outputs(d.num_timesteps), torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    assert_same_steps(run_ours(d, outputs, x_T), run_diffusers(sched, outputs, x_T))


@pytest.mark.parametrize("respacing", ["10", "20"])
def test_diffusers_defaults_match_at_any_step_count(respacing):
    """At solver_order=2, lower_order_final (default True) only concerns the last step, which
    final_sigmas_type="zero" (default) already takes at first order: the defaults match, below 15 steps too."""
    betas = get_named_beta_schedule("linear", 1000)
    d = chain(keep=space_timesteps(1000, respacing))
    sched = diffusers_scheduler(betas, d.timestep_map[::-1], "epsilon", lower_order_final=True)
    outputs, x_T = fixed_outputs(d.num_timesteps), torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    assert_same_steps(run_ours(d, outputs, x_T), run_diffusers(sched, outputs, x_T))


def drive_steps(d: GaussianDiffusion, outputs: list[torch.Tensor], x_T: torch.Tensor,
                first_order_at: tuple[int, ...] = ()) -> list[torch.Tensor]:
    """dpm_solver_step by hand over the chain, first order at the chain indices first_order_at."""
    x, prev, xs = x_T.clone(), None, []
    for k, i in enumerate(range(d.num_timesteps - 1, -1, -1)):
        t = torch.full((x.shape[0],), i, dtype=torch.long)
        x0 = d.p_mean_variance_from_output(outputs[k], x, t, clip_denoised=False)["pred_xstart"]
        x = dpm_solver_step(d, x, t, x0, None if i in first_order_at else prev)
        prev = x0
        xs.append(x)
    return xs


@pytest.mark.parametrize("lower_order_final", [False, True])
def test_final_sigmas_type_sigma_min_stops_one_data_prediction_short(lower_order_final):
    """final_sigmas_type="sigma_min" ends on the noise level of training timestep 0, without the final
    denoising: over timesteps C it gives what our sampler has at timestep 0 over the chain C + [0] (the x
    before its last step, Trajectory.x_t[-2]), given the same outputs. With lower_order_final=True (and
    fewer than 15 steps) diffusers takes that step to sigma_min at first order; dpm_solver_step driven
    without the previous x_0 there reproduces it, and the sampler's 2M step differs from it."""
    betas = get_named_beta_schedule("linear", 1000)
    default = np.linspace(0, 999, 11).round()[::-1][:-1].astype(int).tolist()  # 999 .. 100
    sched = diffusers_scheduler(betas, default, "epsilon", final_sigmas_type="sigma_min",
                                lower_order_final=lower_order_final)
    d = chain(keep=default + [0])
    outputs, x_T = fixed_outputs(d.num_timesteps), torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    theirs = run_diffusers(sched, outputs[:-1], x_T)
    ours = run_ours(d, outputs, x_T)[:-1]
    if not lower_order_final:
        assert_same_steps(ours, theirs)
    else:
        assert_same_steps(drive_steps(d, outputs, x_T, first_order_at=(1,))[:-1], theirs)
        assert_same_steps(ours[:-1], theirs[:-1])
        assert (ours[-1] - theirs[-1]).abs().max() > 1e-3 * max(1.0, theirs[-1].abs().max().item())


def test_driving_dpm_solver_step_by_hand_is_the_sampler():
    d = chain(keep=space_timesteps(1000, "10"))
    outputs, x_T = fixed_outputs(d.num_timesteps), torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    for a, b in zip(drive_steps(d, outputs, x_T), run_ours(d, outputs, x_T)):
        assert torch.equal(a, b)


# ---- 2. convergence on Gaussian data -------------------------------------------------------------------

class GaussianData:
    """Data x_0 ~ N(mu, s^2) independently per dimension, on a T = 1000 chain.

    With x_t = a x_0 + sigma eps (a = sqrt(abar_t), sigma = sqrt(1 - abar_t)), x_t ~ N(a mu, v_t) with
    v_t = a^2 s^2 + sigma^2, and the exact eps-prediction is
        E[eps | x_t] = Cov(eps, x_t) / Var(x_t) (x_t - a mu) = sigma (x_t - a mu) / v_t,
    so the exact data prediction is E[x_0 | x_t] = mu + a s^2 (x_t - a mu) / v_t.
    The probability-flow ODE dx/dt = f(t) x - g(t)^2 / 2 * grad log p_t(x) has a score linear in x, so its
    flow is an increasing affine map; the flow carries the marginals N(a_t mu, v_t) into each other, and
    exactly one increasing affine map does that. From x at timestep t to timestep u:
        x_u = a_u mu + sqrt(v_u / v_t) (x_t - a_t mu)    (and at sigma = 0: mu + s (x_t - a_t mu) / sqrt(v_t)).
    """

    def __init__(self, schedule: str, shape=(2, 3, 8, 8), seed: int = 0):
        self.betas = get_named_beta_schedule(schedule, 1000)
        self.abar = torch.from_numpy(np.cumprod(1.0 - self.betas))
        g = gen(seed)
        self.mu = torch.rand(1, *shape[1:], generator=g, dtype=torch.float64) - 0.5
        self.s = 0.5 + 0.5 * torch.rand(1, *shape[1:], generator=g, dtype=torch.float64)  # image-like spread
        self.x_T = torch.randn(shape, generator=g, dtype=torch.float64)

    def var(self, abar):
        return abar * self.s**2 + 1 - abar

    def eps_model(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t].reshape(-1, 1, 1, 1)  # t is the original timestep
        return (1 - abar).sqrt() * (x - abar.sqrt() * self.mu) / self.var(abar)

    def flow(self, x: torch.Tensor, abar_from, abar_to) -> torch.Tensor:
        """The exact PF-ODE solution from noise level abar_from to abar_to."""
        abar_from, abar_to = torch.as_tensor(abar_from), torch.as_tensor(abar_to)
        scale = (self.var(abar_to) / self.var(abar_from)).sqrt()
        return abar_to.sqrt() * self.mu + scale * (x - abar_from.sqrt() * self.mu)

    def posterior_mean(self, x: torch.Tensor, abar) -> torch.Tensor:
        return self.mu + abar.sqrt() * self.s**2 * (x - abar.sqrt() * self.mu) / self.var(abar)

    def errors(self, steps: int, lower_order_final: bool = False) -> tuple[float, float]:
        """max |x_0 - exact| of DPM-Solver++(2M) and of DDIM (eta = 0) over the chain respaced to `steps`.

        Both samplers end with the data prediction at the last kept timestep t_0 (= 0 here), so the exact
        answer they approximate is the ODE solution from x_T at t_{N-1} = 999 to t_0, then E[x_0 | x_{t_0}].
        """
        d = GaussianDiffusion(self.betas, use_timesteps=space_timesteps(1000, str(steps)))
        top, bottom = self.abar[d.timestep_map[-1]], self.abar[d.timestep_map[0]]
        exact = self.posterior_mean(self.flow(self.x_T, top, bottom), bottom)
        kw = dict(noise=self.x_T.clone(), clip_denoised=False)
        dpm = dpm_solver_sample_loop(d, self.eps_model, self.x_T.shape, lower_order_final=lower_order_final, **kw)
        ddim = ddim_sample_loop(d, self.eps_model, self.x_T.shape, **kw)
        return (dpm - exact).abs().max().item(), (ddim - exact).abs().max().item()


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_second_order_convergence_on_gaussian_data(schedule):
    """Halving the step halves DDIM's error and quarters DPM-Solver++(2M)'s.

    Measured (max abs error, steps 5/10/20/40/80/160), linear:
        DPM++ 0.87 1.00 0.36 0.099 0.025 0.0061;  DDIM 1.17 0.56 0.28 0.14 0.069 0.035
    squaredcos_cap_v2:
        DPM++ 0.80 0.38 0.12 0.029 0.0067 0.0017;  DDIM 0.80 0.38 0.19 0.092 0.046 0.023
    Few evenly spaced steps are pre-asymptotic for 2M: the last interval, t_1 -> t_0 = 0, is far longer in
    lambda than the one before it (h_i >> h_{i-1}), so its linear extrapolation 1/(2 r_i) (x_theta_{i-1} -
    x_theta_{i-2}) overshoots a data prediction that has nearly stopped changing. On the linear schedule
    2M is worse than DDIM at 10 and 20 steps here, and better from 40 on. (Taking just that interval at
    first order, dpm_solver_step without prev_pred_xstart at chain index 1, gives 0.26 / 0.043 / 0.012 at
    10 / 20 / 40 linear steps.) Checked: the ratio per halving from 40 steps on (~4 vs ~2), and DPM++ well
    below DDIM at 80 and 160 steps.
    """
    data = GaussianData(schedule)
    errs = {n: data.errors(n) for n in (40, 80, 160)}
    for coarse, fine in ((40, 80), (80, 160)):
        dpm_ratio, ddim_ratio = errs[coarse][0] / errs[fine][0], errs[coarse][1] / errs[fine][1]
        assert 3.3 < dpm_ratio < 4.8, f"DPM-Solver++ {coarse}->{fine} steps: error ratio {dpm_ratio:.2f}, not ~4"
        assert 1.7 < ddim_ratio < 2.3, f"DDIM {coarse}->{fine} steps: error ratio {ddim_ratio:.2f}, not ~2"
    assert errs[80][0] < errs[80][1] / 2.5 and errs[160][0] < errs[160][1] / 5
    assert errs[160][0] < 1e-2


@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_the_default_first_order_last_interval_beats_ddim_at_few_steps(schedule):
    """lower_order_final (the default) takes the long interval into timestep 0 at first order.

    Measured (max abs error, steps 5/10/20/40/80/160), linear: 1.07 0.26 0.043 0.012 0.0052 0.0019;
    squaredcos_cap_v2: 0.60 0.085 0.010 0.0027 0.0011 0.0004 (DDIM in the test above).
    """
    data = GaussianData(schedule)
    for steps in (10, 20, 40):
        default, ddim = data.errors(steps, lower_order_final=True)
        as_written, _ = data.errors(steps, lower_order_final=False)
        assert default < ddim / 2, f"{steps} steps: DPM-Solver++ {default:.3g} vs DDIM {ddim:.3g}"
        assert default < as_written, f"{steps} steps: {default:.3g} vs Algorithm 2 as written {as_written:.3g}"


def test_the_final_denoising_gap_to_the_sigma_zero_ode_solution_is_small():
    """The samplers' reference (exact ODE to t_0 = 0, then E[x_0 | x_{t_0}]) and the exact ODE solution all
    the way to sigma = 0 differ by O(sigma_{t_0}^2 / s^2), the same for every step count: ~4e-4 here."""
    data = GaussianData("linear")
    top, bottom = data.abar[999], data.abar[0]
    reference = data.posterior_mean(data.flow(data.x_T, top, bottom), bottom)
    to_zero = data.flow(data.x_T, top, torch.tensor(1.0, dtype=torch.float64))
    assert (reference - to_zero).abs().max() < 1e-3


# ---- 3. model layouts, denoised_fn, one-step chains, bad inputs ------------------------------------------

T_SMALL = 50


def small(respacing: str | None = "10", **kwargs) -> GaussianDiffusion:
    keep = None if respacing is None else space_timesteps(T_SMALL, respacing)
    return chain("linear", T_SMALL, keep, **kwargs)


def strong_tanh_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A stand-in whose predicted x_0 often leaves [-1, 1], so clip_denoised really clips."""
    return 3.0 * torch.tanh(2.0 * x) - 0.02 * t.to(x.dtype).reshape(-1, 1, 1, 1)


def gaussian_models(seed: int = 0):
    """The exact eps of Gaussian data on the T_SMALL chain, and the same model as v and as learned sigma."""
    abar_all = torch.from_numpy(np.cumprod(1.0 - get_named_beta_schedule("linear", T_SMALL)))
    g = gen(seed)
    mu = torch.rand(1, *SHAPE[1:], generator=g, dtype=torch.float64) - 0.5
    s = 0.5 + 0.5 * torch.rand(1, *SHAPE[1:], generator=g, dtype=torch.float64)

    def eps(x, t):
        abar = abar_all[t].reshape(-1, 1, 1, 1)
        return (1 - abar).sqrt() * (x - abar.sqrt() * mu) / (abar * s**2 + 1 - abar)

    def v(x, t):  # x = a x_0 + sigma eps and v = a eps - sigma x_0, so v = (eps - sigma x) / a
        abar = abar_all[t].reshape(-1, 1, 1, 1)
        return (eps(x, t) - (1 - abar).sqrt() * x) / abar.sqrt()

    def learned(x, t):  # eps, then variance values the solver must ignore
        return torch.cat([eps(x, t), torch.tanh(x)], dim=1)

    return eps, v, learned


def test_eps_v_and_learned_sigma_models_give_the_same_samples():
    eps, v, learned = gaussian_models()
    x_T = torch.randn(SHAPE, generator=gen(0), dtype=torch.float64)
    kw = dict(noise=x_T, clip_denoised=False)
    ref = dpm_solver_sample_loop(small(), eps, SHAPE, **kw)
    torch.testing.assert_close(dpm_solver_sample_loop(small(model_mean_type="v"), v, SHAPE, **kw), ref,
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(dpm_solver_sample_loop(small(model_var_type="learned_range"), learned, SHAPE, **kw),
                               ref, rtol=0, atol=1e-12)


def test_the_first_step_is_ddim_and_later_steps_are_not():
    d, x_T = small(), torch.randn(SHAPE, generator=gen(2))
    _, dpm = dpm_solver_sample_loop(d, strong_tanh_model, SHAPE, noise=x_T, return_trajectory=True)
    _, ddim = ddim_sample_loop(d, strong_tanh_model, SHAPE, noise=x_T, return_trajectory=True)
    torch.testing.assert_close(dpm.x_t[0], ddim.x_t[0], rtol=0, atol=1e-6)
    assert (dpm.x_t[1] - ddim.x_t[1]).abs().max() > 1e-3


def test_the_last_step_returns_the_final_data_prediction():
    d = small()
    x, traj = dpm_solver_sample_loop(d, strong_tanh_model, SHAPE, generator=gen(1), return_trajectory=True)
    assert torch.equal(x, traj.pred_xstart[-1]) and torch.equal(traj.x_t[-1], x)
    assert x.abs().max() <= 1  # the clipped prediction
    unclipped = dpm_solver_sample_loop(d, strong_tanh_model, SHAPE, generator=gen(1), clip_denoised=False)
    assert unclipped.abs().max() > 1.5


@pytest.mark.parametrize("respacing", [None, "10", "ddim5"])
def test_exact_eps_of_a_single_point_returns_it(respacing):
    """Every x_0 prediction is c, so the 2M correction vanishes and the sample is c."""
    c = 0.3
    abar_all = torch.from_numpy(np.cumprod(1.0 - get_named_beta_schedule("linear", T_SMALL)))

    def model_fn(x, t):
        abar = abar_all[t].to(x.dtype).reshape(-1, 1, 1, 1)
        return (x - abar.sqrt() * c) / (1 - abar).sqrt()

    x, traj = dpm_solver_sample_loop(small(respacing), model_fn, SHAPE, generator=gen(0), return_trajectory=True)
    torch.testing.assert_close(traj.pred_xstart, torch.full_like(traj.pred_xstart, c), rtol=0, atol=1e-3)
    torch.testing.assert_close(x, torch.full_like(x, c), rtol=0, atol=1e-4)


def test_one_call_per_step_with_original_timesteps_and_a_full_trajectory():
    d, seen = small("10"), []

    def model_fn(x, t):
        seen.append(int(t[0]))
        return strong_tanh_model(x, t)

    x, traj = dpm_solver_sample_loop(d, model_fn, SHAPE, generator=gen(0), return_trajectory=True)
    assert seen == space_timesteps(T_SMALL, "10")[::-1] == traj.timesteps
    assert traj.x_t.shape == (10, *SHAPE) and traj.pred_xstart.shape == (10, *SHAPE)


@pytest.mark.parametrize("respacing", ["1", "ddim1"])
def test_one_step_chains_return_the_data_prediction(respacing):
    d = small(respacing)
    assert d.num_timesteps == 1
    x_T = torch.randn(SHAPE, generator=gen(0))
    out = dpm_solver_sample_loop(d, strong_tanh_model, SHAPE, noise=x_T)
    expected = d.p_mean_variance(strong_tanh_model, x_T, torch.zeros(SHAPE[0], dtype=torch.long))["pred_xstart"]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, ddim_sample_loop(d, strong_tanh_model, SHAPE, noise=x_T), rtol=0, atol=1e-6)


def test_inpainting_denoised_fn_keeps_the_known_region_exact():
    image = torch.rand(SHAPE, generator=gen(4)) * 2 - 1
    mask = torch.zeros(SHAPE[0], 1, *SHAPE[2:])
    mask[..., :2] = 1  # keep the left half
    fn = guidance.inpaint_denoised_fn(image, mask)
    x, traj = dpm_solver_sample_loop(small(), strong_tanh_model, SHAPE, generator=gen(0), denoised_fn=fn,
                                     return_trajectory=True)
    known = mask.expand(SHAPE) > 0.5
    assert torch.equal(x[known], image[known])
    assert all(torch.equal(p[known], image[known]) for p in traj.pred_xstart)  # every predicted x_0
    assert (x[~known] - image[~known]).abs().mean() > 0.1  # the rest is the model's


def test_classifier_free_guidance_is_a_wrapped_model_fn():
    """At scale 1 the guided model is the conditional one; at scale 3 the samples move."""
    def model_fn(x, t, y):
        return strong_tanh_model(x, t) + 0.3 * y.reshape(-1, 1, 1, 1)

    d, x_T = small(), torch.randn(SHAPE, generator=gen(5))
    cond, uncond = torch.ones(SHAPE[0]), torch.zeros(SHAPE[0])
    run = lambda fn: dpm_solver_sample_loop(d, fn, SHAPE, noise=x_T, model_kwargs={"y": cond})  # noqa: E731
    plain = run(model_fn)
    torch.testing.assert_close(run(guidance.classifier_free_model_fn(model_fn, 1.0, {"y": uncond}, SHAPE[1])), plain,
                               rtol=0, atol=1e-6)
    assert (run(guidance.classifier_free_model_fn(model_fn, 3.0, {"y": uncond}, SHAPE[1])) - plain).abs().max() > 1e-2


def test_deterministic_given_the_noise_and_float32_close_to_float64():
    d, x_T = small(), torch.randn(SHAPE, generator=gen(6), dtype=torch.float64)
    a = dpm_solver_sample_loop(d, strong_tanh_model, SHAPE, noise=x_T, generator=gen(0))
    b = dpm_solver_sample_loop(d, strong_tanh_model, SHAPE, noise=x_T, generator=gen(1))
    assert torch.equal(a, b) and a.dtype == torch.float64
    single = dpm_solver_sample_loop(d, strong_tanh_model, SHAPE, noise=x_T.float())
    assert single.dtype == torch.float32 and (single.double() - a).abs().max() < 1e-4


def test_bad_inputs_are_clear_errors():
    d = small()
    with pytest.raises(ValueError, match=r"noise has shape \(1, 3, 4, 4\), expected \(2, 3, 4, 4\)"):
        dpm_solver_sample_loop(d, strong_tanh_model, SHAPE, noise=torch.zeros(1, 3, 4, 4))
    with np.errstate(divide="ignore"):  # beta = 0 has a log(0) in the posterior tables
        flat = GaussianDiffusion(np.array([0.1, 0.0, 0.2]))  # a repeated noise level: h_i = 0
    with pytest.raises(ValueError, match="strictly decreasing"):
        dpm_solver_sample_loop(flat, strong_tanh_model, SHAPE)
    x, t = torch.zeros(SHAPE), torch.full((SHAPE[0],), 3, dtype=torch.long)
    with pytest.raises(ValueError, match="prev_pred_xstart must have x's shape"):
        dpm_solver_step(d, x, t, x, torch.zeros(1, 3, 4, 4))
    with pytest.raises(TypeError):  # gradient guidance needs ancestral or DDIM sampling
        dpm_solver_sample_loop(d, strong_tanh_model, SHAPE, cond_fn=lambda x, t: torch.zeros_like(x))
