"""Samplers: ancestral sampling (DDPM Algorithm 2), DDIM (Song et al. 2020, Eq. 12) and
DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2).

All take a `model_fn(x_t, t, **model_kwargs)`. Ancestral and DDIM also take an optional
`cond_fn(x_t, t, **model_kwargs)` that returns grad log p(y | x_t) for gradient guidance (classifier,
CLIP): ancestral sampling shifts the mean with it, DDIM the score (Dhariwal & Nichol 2021, Algorithms 1
and 2). Guidance that changes the model's prediction itself (classifier-free) is a wrapped model_fn
instead, and works with every sampler: see guidance.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from .gaussian import GaussianDiffusion, randn


@dataclass
class Trajectory:
    """What the sampler saw: timesteps [S] (original chain), x_t and pred_xstart [S, N, C, H, W]."""

    timesteps: list[int]
    x_t: torch.Tensor
    pred_xstart: torch.Tensor


def _loop(step_fn: Callable, diffusion: GaussianDiffusion, shape: tuple, noise: torch.Tensor | None,
          generator: torch.Generator | None, device, progress: bool, return_trajectory: bool, desc: str,
          start: int | None = None):
    """Run step_fn from chain index `start` (default the top, num_timesteps - 1; `noise` is x at that index)
    down to 0. A lower start continues a partly noised image (SDEdit: GaussianDiffusion.q_sample to it)."""
    top = diffusion.num_timesteps - 1
    if start is None:
        start = top
    elif isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= top:
        raise ValueError(f"start must be a chain index in 0..{top} (this chain has {top + 1} steps), got {start!r}")
    device = torch.device(device) if device is not None else (
        noise.device if noise is not None else torch.device("cpu"))
    x = noise if noise is not None else randn(shape, generator, device)
    steps, xs, x0s = [], [], []
    for i in tqdm(range(start, -1, -1), disable=not progress, desc=desc):
        t = torch.full((x.shape[0],), i, device=device, dtype=torch.long)
        x, pred_xstart = step_fn(x, t)
        if return_trajectory:
            steps.append(diffusion.timestep_map[i])
            xs.append(x.detach().cpu())
            x0s.append(pred_xstart.detach().cpu())
    if return_trajectory:
        return x, Trajectory(steps, torch.stack(xs), torch.stack(x0s))
    return x


@torch.no_grad()
def p_sample_loop(diffusion: GaussianDiffusion, model_fn: Callable, shape: tuple, *, noise: torch.Tensor | None = None,
                  model_kwargs: dict | None = None, cond_fn: Callable | None = None,
                  denoised_fn: Callable | None = None, clip_denoised: bool = True,
                  generator: torch.Generator | None = None, device=None,
                  progress: bool = False, return_trajectory: bool = False, start: int | None = None):
    """Ancestral sampling from x_T ~ N(0, I) to x_0, shape [N, C, H, W].

    noise: x_T (default: drawn from the generator); GLIDE's upsampler passes N(0, I) * 0.997 here, a
    temperature on the starting noise only. start: begin at this chain index instead, `noise` being x there.
    Returns x_0, or (x_0, Trajectory) with return_trajectory.
    """

    def step(x, t):
        out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised, denoised_fn, model_kwargs)
        mean = out["mean"]
        if cond_fn is not None:
            with torch.enable_grad():
                mean = diffusion.condition_mean(cond_fn, out, x, t, model_kwargs)
        z = randn(x.shape, generator, x.device, x.dtype)
        nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))  # no noise at the last step
        return mean + nonzero * torch.exp(0.5 * out["log_variance"]) * z, out["pred_xstart"]

    return _loop(step, diffusion, shape, noise, generator, device, progress, return_trajectory, "sampling", start)


@torch.no_grad()
def ddim_sample_loop(diffusion: GaussianDiffusion, model_fn: Callable, shape: tuple, *, eta: float = 0.0,
                     noise: torch.Tensor | None = None, model_kwargs: dict | None = None,
                     cond_fn: Callable | None = None, denoised_fn: Callable | None = None,
                     clip_denoised: bool = True, generator: torch.Generator | None = None, device=None,
                     progress: bool = False, return_trajectory: bool = False, start: int | None = None):
    """DDIM sampling (Song et al. 2020, Eq. 12); eta=0 is deterministic, eta=1 matches DDPM's variance.
    start: begin at this chain index, `noise` being x there (as p_sample_loop).

    Returns x_0 [N, C, H, W], or (x_0, Trajectory) with return_trajectory.
    """
    # eta > 1 asks for more noise than the step has room for (a NaN square root); NaN passes `eta < 0`.
    if not (isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0 <= eta <= 1):
        raise ValueError(f"eta must be a finite number in [0, 1] (0: deterministic DDIM, 1: DDPM's variance), "
                         f"got {eta!r}")

    def step(x, t):
        out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised, denoised_fn, model_kwargs)
        if cond_fn is not None:
            with torch.enable_grad():
                out = diffusion.condition_score(cond_fn, out, x, t, model_kwargs)
        # Recompute eps from the (possibly clipped) x_0 so the update is consistent with it.
        eps = diffusion.predict_eps_from_xstart(x, t, out["pred_xstart"])
        abar = diffusion._extract("alphas_cumprod", t, x)
        abar_prev = diffusion._extract("alphas_cumprod_prev", t, x)
        sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
        mean = out["pred_xstart"] * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
        z = randn(x.shape, generator, x.device, x.dtype)
        nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return mean + nonzero * sigma * z, out["pred_xstart"]

    return _loop(step, diffusion, shape, noise, generator, device, progress, return_trajectory, "ddim", start)


# -- DPM-Solver++(2M) -------------------------------------------------------------------------------
# Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models".
# Notation: x_t = alpha_t x_0 + sigma_t eps with alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), and
# lambda_t = log(alpha_t / sigma_t) (half the log-SNR), which grows as the noise falls. The data
# prediction x_theta(x_t, t) is p_mean_variance's "pred_xstart". In the data-prediction form, the exact
# solution of the probability-flow ODE from s to t (paper Sec. 4.1) is
#     x_t = (sigma_t / sigma_s) x_s + sigma_t * int_{lambda_s}^{lambda_t} e^lambda x_theta(x_lambda, lambda) dlambda,
# and holding x_theta constant (first order) or linear in lambda (second order, from the previous
# step's x_theta) gives the updates below; with h = lambda_t - lambda_s,
# sigma_t * integral e^lambda dlambda = sigma_t (e^{lambda_t} - e^{lambda_s}) = -alpha_t (e^{-h} - 1).


def _half_log_snr(abar: torch.Tensor) -> torch.Tensor:
    """lambda = log(alpha / sigma) = (log abar - log(1 - abar)) / 2; +inf at abar = 1 (sigma = 0)."""
    return 0.5 * (torch.log(abar) - torch.log1p(-abar))


def dpm_solver_step(diffusion: GaussianDiffusion, x: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor,
                    prev_pred_xstart: torch.Tensor | None = None) -> torch.Tensor:
    """One DPM-Solver++ update of the probability-flow ODE from chain index t to chain index t - 1.

    In Algorithm 2's indexing the step goes from t_{i-1} (chain index t, where x and pred_xstart =
    x_theta(x_{t_{i-1}}, t_{i-1}) are) to t_i (chain index t - 1; after index 0, to sigma = 0), with
    h_i = lambda_{t_i} - lambda_{t_{i-1}} > 0.

    - prev_pred_xstart None: the first-order update, DPM-Solver++1 (Algorithm 2, line 4), which is DDIM
      with eta = 0 written in lambda:
          x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}}
                    - alpha_{t_i} (e^{-h_i} - 1) x_theta(x_{t_{i-1}}, t_{i-1}).
    - prev_pred_xstart = x_theta(x_{t_{i-2}}, t_{i-2}), the data prediction one step earlier (chain index
      t + 1): the 2M update (Algorithm 2, lines 7-9), the same formula with x_theta replaced by
          D_i = (1 + 1/(2 r_i)) x_theta(x_{t_{i-1}}, t_{i-1}) - 1/(2 r_i) x_theta(x_{t_{i-2}}, t_{i-2}),
          r_i = h_{i-1} / h_i.
    - Where t == 0 the target is sigma = 0 (lambda = +inf, h = +inf): e^{-h_i} = 0 and sigma_{t_i} = 0, so
      the first-order update returns pred_xstart itself; prev_pred_xstart is ignored there (r_i = 0 would
      make 1/(2 r_i) infinite). At the top index there is no earlier point (lambda_{t_{i-2}} = -inf gives
      1/(2 r_i) = 0), so prev_pred_xstart is ignored there too.

    Coefficients are computed in float64 and cast to x's dtype.

    Args:
        x: [N, C, H, W] the current sample x_{t_{i-1}}.
        t: [N] long, indices into this (respaced) chain, not original timesteps.
        pred_xstart: [N, C, H, W] the data prediction at (x, t).
        prev_pred_xstart: [N, C, H, W] the data prediction of the previous step (chain index t + 1), or None.
    Returns:
        [N, C, H, W] x at chain index t - 1; where t == 0, the final sample x_0 = pred_xstart.
    """
    for name, other in (("pred_xstart", pred_xstart), ("prev_pred_xstart", prev_pred_xstart)):
        if other is not None and other.shape != x.shape:
            raise ValueError(f"{name} must have x's shape {tuple(x.shape)}, got {tuple(other.shape)}")
    ref = torch.empty((1,) * x.ndim, dtype=torch.float64, device=x.device)  # gathers tables as [N, 1, 1, 1] float64
    abar_s = diffusion._extract("alphas_cumprod", t, ref)  # t_{i-1}, where x is
    abar_t = diffusion._extract("alphas_cumprod_prev", t, ref)  # t_i, the target; 1 (sigma = 0) after index 0
    lambda_s, lambda_t = _half_log_snr(abar_s), _half_log_snr(abar_t)
    h = lambda_t - lambda_s  # h_i (Algorithm 2, line 1)
    sigma_ratio = torch.sqrt((1.0 - abar_t) / (1.0 - abar_s))  # sigma_{t_i} / sigma_{t_{i-1}}
    data_coef = -torch.sqrt(abar_t) * torch.expm1(-h)  # -alpha_{t_i} (e^{-h_i} - 1), exact for small h too

    d = pred_xstart  # first order: D = x_theta(x_{t_{i-1}}, t_{i-1})
    if prev_pred_xstart is not None:
        abar_r = diffusion._extract("alphas_cumprod_next", t, ref)  # t_{i-2}, one step back; 0 at the top
        h_prev = lambda_s - _half_log_snr(abar_r)  # h_{i-1}
        last = (t == 0).reshape(-1, *([1] * (x.ndim - 1)))
        # 1/(2 r_i) = h_i / (2 h_{i-1}) (line 7); 0 on the last step to sigma = 0, which stays first order.
        half_inv_r = torch.where(last, torch.zeros_like(h), h / (2.0 * h_prev))
        # D_i = (1 + 1/(2 r_i)) x_theta(t_{i-1}) - 1/(2 r_i) x_theta(t_{i-2}) (line 8), rearranged.
        d = pred_xstart + half_inv_r.to(x.dtype) * (pred_xstart - prev_pred_xstart)
    # x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i (lines 4 and 9).
    return sigma_ratio.to(x.dtype) * x + data_coef.to(x.dtype) * d


@torch.no_grad()
def dpm_solver_sample_loop(diffusion: GaussianDiffusion, model_fn: Callable, shape: tuple, *,
                           noise: torch.Tensor | None = None, model_kwargs: dict | None = None,
                           denoised_fn: Callable | None = None, clip_denoised: bool = True,
                           generator: torch.Generator | None = None, device=None, progress: bool = False,
                           return_trajectory: bool = False, lower_order_final: bool = True,
                           start: int | None = None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a deterministic, second-order multistep solver
    of the probability-flow ODE in its data-prediction (x_0) form, from x_T to x_0 of shape [N, C, H, W].

    It runs over the chain `diffusion` as given: for N steps, pass a chain respaced to N timesteps
    (e.g. `GaussianDiffusion.from_config(cfg, "20")`); it makes exactly N model calls, one per kept
    timestep, from the top one down. The data prediction x_theta is p_mean_variance's pred_xstart, so
    eps- and v-prediction, learned-sigma outputs (the extra channels are ignored), clip_denoised, an
    inpainting `denoised_fn` (applied to every predicted x_0) and classifier-free guidance (a wrapped
    model_fn) work as with the other samplers.

    The steps, with the kept timesteps t_{N-1} > ... > t_0 (chain indices N-1 .. 0):
    - the first (from t_{N-1}) is first order, DPM-Solver++1 = DDIM with eta = 0 (Algorithm 2, line 4);
    - every later step down to t_0 is a 2M step that also uses the previous step's x_0 prediction
      (Algorithm 2, lines 7-9);
    - the last step, from t_0 (usually timestep 0), goes to sigma = 0 and returns exactly the data
      prediction x_theta(x_{t_0}, t_0) (with clipping and denoised_fn applied), the same last step as
      DDIM (eta = 0) and ancestral sampling. It is the first-order update with h = +inf, always first
      order. So this is Algorithm 2 over the N - 1 intervals between the kept timesteps (t_M = t_0
      playing the paper's small epsilon) plus one final denoising evaluation at t_0.
    In diffusers' DPMSolverMultistepScheduler (algorithm_type="dpmsolver++", solver_order=2, custom
    `timesteps` = this chain's timestep_map reversed), that last step is final_sigmas_type="zero" (their
    default), which forces the last step to first order. At solver_order=2, lower_order_final affects
    only that same last step, so it makes no difference there: with their defaults every step matches,
    at any step count. final_sigmas_type="sigma_min" instead ends at the noise level of training
    timestep 0 without the final denoising. With lower_order_final=False its output is this sampler's x
    after the step that lands on timestep 0 when 0 is added to the chain (Trajectory.x_t[-2]). With
    their default lower_order_final=True and fewer than 15 steps, that step is first order instead.

    lower_order_final (default True): the interval into t_0 is first order too. An evenly respaced chain
    keeps timestep 0, and its last interval (t_1 -> 0) is far longer in lambda than the one before, so the
    2M extrapolation overshoots there: on Gaussian data with the linear schedule the error at 10 / 20 / 40
    steps is 1.00 / 0.36 / 0.099 with the 2M step and 0.26 / 0.043 / 0.012 without it (DDIM: 0.56 / 0.28 /
    0.14; tests/test_dpm_solver.py). False is Algorithm 2 as written (and diffusers' stepping, above).

    There is no cond_fn: gradient guidance (CLIP, classifier) needs p_sample_loop or ddim_sample_loop.
    Conditioning goes through model_kwargs; classifier-free guidance is a wrapped model_fn.

    noise: x_T [N, C, H, W] (default: drawn from the generator, which nothing else uses); start: begin at this
    chain index instead, `noise` being x there (its first step is first order, as from the top).
    Returns x_0 [N, C, H, W], or (x_0, Trajectory) with return_trajectory: per step the x it produced
    and the pred_xstart it used.
    """
    abar = np.asarray(diffusion.alphas_cumprod)
    if not (np.all((abar > 0) & (abar < 1)) and np.all(np.diff(abar) < 0)):
        # h_i = 0 (a repeated noise level) divides by zero in r_i; abar = 0 or 1 makes lambda infinite.
        raise ValueError("DPM-Solver++ needs alphas_cumprod strictly decreasing inside (0, 1) "
                         "(every beta of the chain in (0, 1))")
    if noise is not None and tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
    history: list[torch.Tensor] = []  # the previous step's x_theta, the buffer Q of Algorithm 2

    def step(x, t):
        out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised, denoised_fn, model_kwargs)
        second_order = history and not (lower_order_final and int(t[0]) == 1)
        x_next = dpm_solver_step(diffusion, x, t, out["pred_xstart"], history[-1] if second_order else None)
        history[:] = [out["pred_xstart"]]  # Q <- x_theta(x_{t_{i-1}}, t_{i-1}) (lines 3, 5 and 10)
        return x_next, out["pred_xstart"]

    return _loop(step, diffusion, shape, noise, generator, device, progress, return_trajectory, "dpm-solver++",
                 start)
