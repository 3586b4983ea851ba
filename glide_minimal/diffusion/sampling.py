"""Samplers: ancestral sampling (DDPM Algorithm 2) and DDIM (Song et al. 2020, Eq. 12).

Both take a `model_fn(x_t, t, **model_kwargs)` and an optional `cond_fn(x_t, t, **model_kwargs)` that
returns grad log p(y | x_t) for gradient guidance (classifier, CLIP). Ancestral sampling shifts the
mean with it, DDIM the score (Dhariwal & Nichol 2021, Algorithms 1 and 2). Guidance that changes the
model's prediction itself (classifier-free) is a wrapped model_fn instead: see guidance.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from .gaussian import GaussianDiffusion


@dataclass
class Trajectory:
    """What the sampler saw: timesteps [S] (original chain), x_t and pred_xstart [S, N, C, H, W]."""

    timesteps: list[int]
    x_t: torch.Tensor
    pred_xstart: torch.Tensor


def _loop(step_fn: Callable, diffusion: GaussianDiffusion, shape: tuple, noise: torch.Tensor | None,
          generator: torch.Generator | None, device, progress: bool, return_trajectory: bool, desc: str):
    device = torch.device(device) if device is not None else (noise.device if noise is not None else torch.device("cpu"))
    x = noise if noise is not None else torch.randn(shape, generator=generator, device=device)
    steps, xs, x0s = [], [], []
    for i in tqdm(range(diffusion.num_timesteps - 1, -1, -1), disable=not progress, desc=desc):
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
                  progress: bool = False, return_trajectory: bool = False):
    """Ancestral sampling from x_T ~ N(0, I) to x_0, shape [N, C, H, W].

    noise: x_T (default: drawn from the generator); GLIDE's upsampler passes N(0, I) * 0.997 here, a
    temperature on the starting noise only.
    Returns x_0, or (x_0, Trajectory) with return_trajectory.
    """

    def step(x, t):
        out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised, denoised_fn, model_kwargs)
        mean = out["mean"]
        if cond_fn is not None:
            with torch.enable_grad():
                mean = diffusion.condition_mean(cond_fn, out, x, t, model_kwargs)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))  # no noise at the last step
        return mean + nonzero * torch.exp(0.5 * out["log_variance"]) * z, out["pred_xstart"]

    return _loop(step, diffusion, shape, noise, generator, device, progress, return_trajectory, "sampling")


@torch.no_grad()
def ddim_sample_loop(diffusion: GaussianDiffusion, model_fn: Callable, shape: tuple, *, eta: float = 0.0,
                     noise: torch.Tensor | None = None, model_kwargs: dict | None = None,
                     cond_fn: Callable | None = None, denoised_fn: Callable | None = None,
                     clip_denoised: bool = True, generator: torch.Generator | None = None, device=None,
                     progress: bool = False, return_trajectory: bool = False):
    """DDIM sampling (Song et al. 2020, Eq. 12); eta=0 is deterministic, eta=1 matches DDPM's variance.

    Returns x_0 [N, C, H, W], or (x_0, Trajectory) with return_trajectory.
    """
    # eta > 1 asks for more noise than the step has room for (a NaN square root); NaN passes `eta < 0`.
    if not (isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0 <= eta <= 1):
        raise ValueError(f"eta must be a finite number in [0, 1] (0: deterministic DDIM, 1: DDPM's variance), got {eta!r}")

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
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        nonzero = (t != 0).to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return mean + nonzero * sigma * z, out["pred_xstart"]

    return _loop(step, diffusion, shape, noise, generator, device, progress, return_trajectory, "ddim")
