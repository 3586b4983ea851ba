"""Gaussian diffusion: the forward process q(x_t | x_0), its posterior, the reverse model p(x_{t-1} | x_t),
and the training losses.

Knows nothing about networks: every method takes a `model_fn(x_t, t, **model_kwargs) -> output`.
Equation numbers refer to Ho et al. 2020 (DDPM) and, marked "IDDPM", Nichol & Dhariwal 2021.
A respaced chain (fewer steps, Sec. 4 of IDDPM) is the same class built over a subset of timesteps:
its betas are recomputed from the kept alphas_cumprod, and the model is still called with the
original timestep (`timestep_map`).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from .schedule import get_named_beta_schedule, space_timesteps

VAR_TYPES = ("fixed_small", "fixed_large", "learned_range")
LOSS_TYPES = ("mse", "hybrid")
MEAN_TYPES = ("eps", "v")


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """A fast, accurate tanh approximation of the standard normal CDF (Page 1977)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log p(x) of data in [-1, 1] quantised to 256 bins under N(means, e^(2 log_scales)) (DDPM Eq. 13).

    The outermost bins extend to -inf / +inf so the likelihood sums to one over the 256 values.
    """
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_bin = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_bin))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension: [N, ...] -> [N]."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def draw_device(generator: torch.Generator | None, device) -> torch.device:
    """Where to draw random numbers for `device`: on the generator's own device (a CPU generator cannot draw
    on a GPU, so its draws are made on the CPU and moved: a seed gives the same numbers on any device)."""
    return generator.device if generator is not None else torch.device(device)


def randn(shape, generator: torch.Generator | None, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """N(0, I) of `shape` on `device`, drawn from `generator` wherever it lives (draw_device)."""
    return torch.randn(shape, generator=generator, device=draw_device(generator, device), dtype=dtype).to(device)


class GaussianDiffusion:
    """A diffusion chain over `num_timesteps` steps (or a respaced subset of them).

    Args:
        betas: [T] noise schedule of the full chain, float64.
        model_var_type: fixed_small (beta-tilde), fixed_large (beta) or learned_range (IDDPM Eq. 15).
        loss_type: mse (L_simple, DDPM Eq. 14) or hybrid (L_simple + L_vlb, IDDPM Eq. 16).
        use_timesteps: the original timesteps this chain keeps (None: all of them).
        model_mean_type: what the network predicts: eps (DDPM, GLIDE) or v = sqrt(abar) eps - sqrt(1 - abar) x_0
            (Salimans & Ho 2022), which is about x_0 at high noise and about eps at low noise.
    """

    def __init__(self, betas: np.ndarray, model_var_type: str = "fixed_small", loss_type: str = "mse",
                 use_timesteps: list[int] | None = None, model_mean_type: str = "eps"):
        if model_mean_type not in MEAN_TYPES:
            raise ValueError(f"unknown model_mean_type {model_mean_type!r}; choose one of: {', '.join(MEAN_TYPES)}")
        self.model_mean_type = model_mean_type
        if model_var_type not in VAR_TYPES:
            raise ValueError(f"unknown model_var_type {model_var_type!r}; choose one of: {', '.join(VAR_TYPES)}")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {loss_type!r}; choose one of: {', '.join(LOSS_TYPES)}")
        if loss_type == "hybrid" and model_var_type != "learned_range":
            raise ValueError("loss_type 'hybrid' needs model_var_type 'learned_range'")
        betas = np.asarray(betas, dtype=np.float64)
        self.original_num_steps = len(betas)
        if use_timesteps is not None:
            # Respacing: keep alphas_cumprod at the chosen steps, then recompute each kept step's beta so
            # the shorter chain has exactly those marginals q(x_t | x_0).
            keep = sorted(set(int(t) for t in use_timesteps))
            if not keep or keep[0] < 0 or keep[-1] >= len(betas):
                raise ValueError(f"use_timesteps must lie in [0, {len(betas)}), got {keep[:3]}...{keep[-3:]}")
            full_cumprod = np.cumprod(1.0 - betas)
            kept = full_cumprod[keep]
            betas = 1.0 - kept / np.append(1.0, kept[:-1])
            self.timestep_map = keep
        else:
            self.timestep_map = list(range(len(betas)))
        self.model_var_type = model_var_type
        self.loss_type = loss_type
        self.num_timesteps = len(betas)
        self.betas = betas

        self.alphas = alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # DDPM Eq. (7): the posterior q(x_{t-1} | x_t, x_0) = N(mu-tilde, beta-tilde).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta-tilde_0 = 0: clip the log at t=0 to beta-tilde_1 so it stays finite. A one-step chain has no
        # beta-tilde_1; its only step adds no noise (the samplers skip it at t=0), so beta_0 stands in.
        self._first_variance = self.posterior_variance[1] if len(betas) > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(self._first_variance, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self._tables: dict[tuple, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg, respacing: str | None = None) -> "GaussianDiffusion":
        """Build from a DiffusionConfig; `respacing` is a space_timesteps spec (None: the full chain)."""
        betas = get_named_beta_schedule(cfg.noise_schedule, cfg.num_timesteps)
        keep = None if respacing in (None, "") else space_timesteps(cfg.num_timesteps, respacing)
        return cls(betas, cfg.model_var_type, cfg.loss_type, use_timesteps=keep,
                   model_mean_type=cfg.model_mean_type)

    # -- helpers -----------------------------------------------------------------------------------
    def _extract(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Gather table[t] (kept in float64) cast to like's dtype/device, shaped [N, 1, 1, 1] to broadcast."""
        key = (name, like.device)
        if key not in self._tables:
            self._tables[key] = torch.from_numpy(getattr(self, name)).to(like.device)
        out = self._tables[key][t.to(like.device)].to(like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Index into this chain -> the original timestep the model was trained with."""
        key = ("timestep_map", t.device)
        if key not in self._tables:  # cached per device: no host-to-device copy at every step
            self._tables[key] = torch.tensor(self.timestep_map, dtype=torch.long, device=t.device)
        return self._tables[key][t]

    # -- forward process ---------------------------------------------------------------------------
    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor):
        """q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (DDPM Eq. 4): mean, variance, log variance."""
        mean = self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
        variance = self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) ** 2
        return mean, variance, torch.log(variance)

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) in one step: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. [N, C, H, W]."""
        if noise is None:
            noise = randn(x_start.shape, generator, x_start.device, x_start.dtype)
        return (self._extract("sqrt_alphas_cumprod", t, x_start) * x_start
                + self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """q(x_{t-1} | x_t, x_0) (DDPM Eqs. 6-7): mean mu-tilde, variance beta-tilde, clipped log variance."""
        mean = (self._extract("posterior_mean_coef1", t, x_t) * x_start
                + self._extract("posterior_mean_coef2", t, x_t) * x_t)
        return (mean, self._extract("posterior_variance", t, x_t),
                self._extract("posterior_log_variance_clipped", t, x_t))

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert q_sample: x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        return ((self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart)
                / self._extract("sqrt_recipm1_alphas_cumprod", t, x_t))

    # -- reverse process ---------------------------------------------------------------------------
    def p_mean_variance(self, model_fn: Callable, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True,
                        denoised_fn: Callable | None = None, model_kwargs: dict | None = None) -> dict:
        """p(x_{t-1} | x_t): call the model once and turn its output into mean and variance.

        Returns a dict with mean, variance, log_variance, pred_xstart, eps and model_output, all [N, C, H, W].
        """
        model_output = model_fn(x, self.model_timesteps(t), **(model_kwargs or {}))
        return self.p_mean_variance_from_output(model_output, x, t, clip_denoised, denoised_fn)

    def p_mean_variance_from_output(self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                                    clip_denoised: bool = True, denoised_fn: Callable | None = None) -> dict:
        channels = x.shape[1]
        if self.model_var_type == "learned_range":
            if model_output.shape[1] != 2 * channels:
                raise ValueError(f"learned_range needs a model output of {2 * channels} channels "
                                 f"({self.model_mean_type} and the variance values), got {model_output.shape[1]}")
            prediction, var_values = model_output.split(channels, dim=1)
            # IDDPM Eq. (15): interpolate between log beta-tilde (-1) and log beta (+1) in log space.
            min_log = self._extract("posterior_log_variance_clipped", t, x)
            max_log = self._extract("betas_log", t, x)
            frac = (var_values + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            prediction = model_output
            if prediction.shape[1] != channels:
                raise ValueError(f"{self.model_var_type} needs a model output of {channels} channels, "
                                 f"got {prediction.shape[1]}")
            name = "posterior" if self.model_var_type == "fixed_small" else "large"
            variance = self._extract(f"{name}_variance_table", t, x).expand_as(x)
            log_variance = self._extract(f"{name}_log_variance_table", t, x).expand_as(x)
        if self.model_mean_type == "v":  # x_t = a x_0 + s eps and v = a eps - s x_0, so:
            a, s = self._extract("sqrt_alphas_cumprod", t, x), self._extract("sqrt_one_minus_alphas_cumprod", t, x)
            pred_xstart, eps = a * x - s * prediction, s * x + a * prediction
        else:
            eps = prediction
            pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart,
                "eps": eps, "model_output": model_output}

    @property
    def betas_log(self) -> np.ndarray:
        return np.log(self.betas)

    @property
    def posterior_variance_table(self) -> np.ndarray:
        return self.posterior_variance

    @property
    def posterior_log_variance_table(self) -> np.ndarray:
        return self.posterior_log_variance_clipped

    @property
    def large_variance_table(self) -> np.ndarray:
        # fixed_large: sigma_t^2 = beta_t, except beta-tilde_1 at t=0 for a better decoder (IDDPM Sec. 3.1).
        return np.append(self._first_variance, self.betas[1:])

    @property
    def large_log_variance_table(self) -> np.ndarray:
        return np.log(self.large_variance_table)

    # -- guidance hooks (used by the samplers) -----------------------------------------------------
    def condition_mean(self, cond_fn: Callable, out: dict, x: torch.Tensor, t: torch.Tensor,
                       model_kwargs: dict | None = None) -> torch.Tensor:
        """Shift the mean by Sigma * grad log p(y | x_t) (Dhariwal & Nichol 2021, Algorithm 1)."""
        grad = cond_fn(x, self.model_timesteps(t), **(model_kwargs or {}))
        return out["mean"] + out["variance"] * grad.to(out["mean"].dtype)

    def condition_score(self, cond_fn: Callable, out: dict, x: torch.Tensor, t: torch.Tensor,
                        model_kwargs: dict | None = None) -> dict:
        """Shift the score: eps' = eps - sqrt(1 - abar_t) grad log p(y | x_t) (Dhariwal & Nichol 2021, Algorithm 2).

        eps is first re-derived from out["pred_xstart"], which clip_denoised and denoised_fn may have
        changed: the shift starts from the eps the DDIM update would use, so a zero gradient is a no-op.
        """
        grad = cond_fn(x, self.model_timesteps(t), **(model_kwargs or {}))
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        eps = eps - self._extract("sqrt_one_minus_alphas_cumprod", t, x) * grad.to(x.dtype)
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {**out, "eps": eps, "pred_xstart": pred_xstart, "mean": mean}

    # -- losses ------------------------------------------------------------------------------------
    def _vb_terms_bpd(self, out: dict, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One term of L_vlb in bits per dimension: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t > 0,
        the discretised decoder NLL -log p(x_0 | x_1) for t = 0 (DDPM Eq. 5). Returns [N]."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model_fn: Callable, x_start: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor | None = None, model_kwargs: dict | None = None) -> dict:
        """Per-example losses [N]: 'loss', 'mse' and (hybrid) 'vb'.

        mse is L_simple = ||eps - eps_theta(x_t, t)||^2 (DDPM Eq. 14), or ||v - v_theta||^2 for v-prediction.
        hybrid adds L_vlb with the mean detached, so the VLB only trains the variance, weighted by T/1000
        (IDDPM Eq. 16 and Sec. 3.1).
        """
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise)
        model_output = model_fn(x_t, self.model_timesteps(t), **(model_kwargs or {}))
        channels = x_start.shape[1]
        prediction = model_output[:, :channels]
        target = noise
        if self.model_mean_type == "v":
            target = (self._extract("sqrt_alphas_cumprod", t, x_start) * noise
                      - self._extract("sqrt_one_minus_alphas_cumprod", t, x_start) * x_start)
        terms = {"mse": mean_flat((target - prediction.float()) ** 2)}
        if self.loss_type == "hybrid":
            frozen = torch.cat([prediction.detach(), model_output[:, channels:]], dim=1).float()
            out = self.p_mean_variance_from_output(frozen, x_t.float(), t, clip_denoised=False)
            terms["vb"] = self._vb_terms_bpd(out, x_start.float(), x_t.float(), t) * (self.num_timesteps / 1000.0)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms

    def prior_bpd(self, x_start: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x_0) || N(0, I)) in bits/dim, [N]; tiny for a well-designed schedule."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, device=x_start.device, dtype=torch.long)
        mean, _, log_var = self.q_mean_variance(x_start, t)
        return mean_flat(normal_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(mean))) / math.log(2.0)

    @torch.no_grad()
    def calc_bpd_loop(self, model_fn: Callable, x_start: torch.Tensor, model_kwargs: dict | None = None,
                      generator: torch.Generator | None = None, progress: bool = False) -> dict:
        """The full variational bound in bits/dim over every step of this chain (IDDPM Sec. 2).

        Returns total_bpd [N], prior_bpd [N], vb [N, T] (per-step terms) and mse [N, T].
        """
        n = x_start.shape[0]
        vb, mse = [], []
        steps = range(self.num_timesteps - 1, -1, -1)
        for i in tqdm(steps, disable=not progress, desc="bits/dim"):
            t = torch.full((n,), i, device=x_start.device, dtype=torch.long)
            noise = randn(x_start.shape, generator, x_start.device, x_start.dtype)
            x_t = self.q_sample(x_start, t, noise)
            out = self.p_mean_variance(model_fn, x_t, t, clip_denoised=True, model_kwargs=model_kwargs)
            vb.append(self._vb_terms_bpd(out, x_start, x_t, t))
            mse.append(mean_flat((out["eps"] - noise) ** 2))
        vb = torch.stack(vb[::-1], dim=1)
        mse = torch.stack(mse[::-1], dim=1)
        prior = self.prior_bpd(x_start)
        return {"total_bpd": vb.sum(dim=1) + prior, "prior_bpd": prior, "vb": vb, "mse": mse}

    @torch.no_grad()
    def calc_bpd_estimate(self, model_fn: Callable, x_start: torch.Tensor, num_strata: int = 100,
                          model_kwargs: dict | None = None, generator: torch.Generator | None = None) -> dict:
        """An unbiased estimate of calc_bpd_loop's total with ~num_strata model calls instead of T.

        The decoder term (t = 0, most of the bits) and the prior are computed exactly; the KL terms
        t = 1..T-1 are split into num_strata contiguous strata, one uniformly drawn t per stratum (and
        per image) stands for its stratum, weighted by the stratum's size (stratified Monte Carlo).
        Returns total_bpd [N], decoder_bpd [N], kl_bpd [N], prior_bpd [N].
        """
        n, device = x_start.shape[0], x_start.device

        def term(t: torch.Tensor) -> torch.Tensor:
            noise = randn(x_start.shape, generator, device, x_start.dtype)
            x_t = self.q_sample(x_start, t, noise)
            out = self.p_mean_variance(model_fn, x_t, t, clip_denoised=True, model_kwargs=model_kwargs)
            return self._vb_terms_bpd(out, x_start, x_t, t)

        decoder = term(torch.zeros(n, dtype=torch.long, device=device))
        edges = np.linspace(1, self.num_timesteps, min(num_strata, self.num_timesteps - 1) + 1).round().astype(int)
        kl = torch.zeros(n, device=device, dtype=decoder.dtype)
        for lo, hi in zip(edges[:-1], edges[1:]):
            where = draw_device(generator, device)
            t = torch.randint(int(lo), int(hi), (n,), generator=generator, device=where).to(device)
            kl += (hi - lo) * term(t)
        prior = self.prior_bpd(x_start)
        return {"total_bpd": decoder + kl + prior, "decoder_bpd": decoder, "kl_bpd": kl, "prior_bpd": prior}
