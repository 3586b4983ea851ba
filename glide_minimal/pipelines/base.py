"""The plain pipeline (chapter 1): a model, a respaced GaussianDiffusion and a sampler, images in [0, 1] out.

A pipeline composes the pieces and adds nothing of its own. Every entry point checks all of its arguments
(glide_minimal/checks.py) before any model loads or runs.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..checks import (
    check_count,
    check_finite_range,
    check_sampler,
    check_sampler_settings,
    check_seed,
    check_steps_type,
    make_generator,
)
from ..config import Config
from ..diffusion import GaussianDiffusion, ddim_sample_loop, dpm_solver_sample_loop, p_sample_loop
from ..speed import Settings, prepare


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] -> image space [0, 1]."""
    return ((x + 1) / 2).clamp(0, 1)


def check_unit_range(x: torch.Tensor, name: str) -> None:
    """Images must be floats in [0, 1] (NaN fails too)."""
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype} (uint8 images: divide by 255)")
    if not ((x >= 0) & (x <= 1)).all():
        raise ValueError(f"{name} values must lie in [0, 1]; got min {x.min().item():.4g}, max {x.max().item():.4g} "
                         "(model-space images in [-1, 1]: pass (x + 1) / 2)")


class Companion:
    """A model that works beside a pipeline (its upsampler, CLIP, classifier): given as an object, or as a
    zero-argument `load` function called on first use. pipelines/loading.py wires the store's loaders in,
    so a pipeline never imports the store. `missing`: the error when there is neither."""

    def __init__(self, value=None, load: Callable | None = None, missing: str = "no companion model was given"):
        self.value, self.load, self.missing = value, load, missing

    @property
    def known(self) -> bool:
        return self.value is not None or self.load is not None

    def get(self):
        if self.value is None:
            if self.load is None:
                raise ValueError(self.missing)
            self.value = self.load()
        return self.value

    @classmethod
    def of(cls, value, missing: str) -> "Companion":
        """value as a Companion: a Companion is kept; anything else (an object or None) is wrapped."""
        return value if isinstance(value, Companion) else cls(value, missing=missing)


class DiffusionPipeline:
    """Sampling from an unconditional diffusion model (chapter 1).

        pipe = gm.load_pipeline("tutorial-ddpm")
        images = pipe(num_images=16, steps=50, sampler="ddim", seed=0)   # [16, 1, 16, 16] in [0, 1]
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | torch.device = "cpu"):
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self._forward: Callable[..., torch.Tensor] = model
        self._diffusions: dict[str, GaussianDiffusion] = {}
        self.tokenizer = None  # text-conditional pipelines set theirs

    def tokens(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """{"tokens": [N, text_ctx], "mask": [N, text_ctx]} of the prompts, on this pipeline's device."""
        if self.tokenizer is None:
            raise ValueError(f"{self.cfg.name!r} is not text-conditional: it takes no prompts")
        tokens, mask = self.tokenizer.padded_tokens_and_mask(prompts)
        return {"tokens": tokens.to(self.device), "mask": mask.to(self.device)}

    def optimize(self, settings: Settings) -> "DiffusionPipeline":
        """Run the network under `settings` (speed.Settings: autocast dtype, channels_last, torch.compile);
        the diffusion math stays fp32. Returns self. Converts the model's memory layout in place."""
        self._forward = prepare(self.model, settings)
        return self

    def diffusion(self, steps: int | str | None = None, name: str = "steps") -> GaussianDiffusion:
        """The chain for `steps`: an int or a respacing spec ("100", "ddim50", "fast27"); None: the config's.
        A bad spec is a ValueError naming `name` (the argument it came from)."""
        check_steps_type(steps, name)
        spec = str(steps if steps is not None else self.cfg.diffusion.sample_respacing)
        if spec not in self._diffusions:
            if spec.isdigit() and not 0 < int(spec) <= self.cfg.diffusion.num_timesteps:
                raise ValueError(f"{name} must be in 1..{self.cfg.diffusion.num_timesteps}, got {spec}")
            full = str(self.cfg.diffusion.num_timesteps)
            try:
                chain = GaussianDiffusion.from_config(self.cfg.diffusion, None if spec == full else spec)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            self._diffusions[spec] = chain
        return self._diffusions[spec]

    def check_sampling(self, steps, sampler, eta, seed, prefix: str = "") -> int:
        """Check the sampling settings against this model's chain before any work; returns the seed to use
        (an int: None draws a fresh one). prefix names the arguments ("upsample_" for a cascade's stage).
        steps: a step count or respacing spec; every sampler runs over the chain it names (N steps: N model
        evaluations, twice that with classifier-free guidance's batched pair counted as two)."""
        check_sampler(sampler, f"{prefix}sampler")
        check_finite_range(f"{prefix}eta", eta, 0, 1)
        check_sampler_settings(sampler, eta, prefix=prefix)
        self.diffusion(steps, f"{prefix}steps")  # builds (and caches) the respaced chain: a bad spec fails here
        return check_seed(seed)

    def model_fn(self, x_t: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        return self._forward(x_t, t, **kwargs)

    def sample(self, num_images: int, *, steps: int | str | None = None, sampler: str = "ancestral",
               eta: float = 0.0, seed: int | None = 0, model_kwargs: dict | None = None, cond_fn=None,
               model_fn=None, denoised_fn=None, noise_scale: float = 1.0, progress: bool = False,
               return_trajectory: bool = False, init: torch.Tensor | None = None, strength: float = 1.0):
        """x_0 in the model's [-1, 1] space, [N, C, H, W] (and a Trajectory with return_trajectory).

        model_fn: a wrapped model (e.g. classifier-free guidance); default: the plain model.
        denoised_fn: applied to every predicted x_0 (e.g. inpainting's known region).
        noise_scale: scales the starting noise x_T (GLIDE's upsampler samples with 0.997).
        sampler: "ancestral" (DDPM), "ddim" (eta: its noise, in [0, 1]; 0: deterministic) or "dpm++2m"
        (DPM-Solver++(2M), deterministic, no cond_fn); seed: None draws a fresh one.
        init, strength (SDEdit, Meng et al. 2022): start from init [N, C, H, W] in [-1, 1] noised to the step
        `strength` of the way up the chain, and run only the steps below it: 1.0 starts from pure noise (init
        unused), a small strength keeps most of init. GLIDE edits from a user's sketch this way.
        """
        num_images = check_count("num_images", num_images)
        noise_scale = check_finite_range("noise_scale", noise_scale, 0, None, lo_open=True)
        seed = self.check_sampling(steps, sampler, eta, seed)
        check_sampler_settings(sampler, eta, gradient_guidance=cond_fn is not None)
        m = self.cfg.model
        shape = (num_images, m.in_channels, m.image_size, m.image_size)
        generator = make_generator(seed, self.device)
        strength = check_finite_range("strength", strength, 0, 1, lo_open=True)
        diffusion = self.diffusion(steps)
        noise, start = None, None
        if noise_scale != 1.0:  # drawn exactly as the loop would draw it, then scaled
            noise = torch.randn(shape, generator=generator, device=self.device) * noise_scale
        if strength < 1.0:
            if init is None or tuple(init.shape) != shape:
                raise ValueError(f"strength < 1 continues an image: pass init of shape {shape} in [-1, 1], got "
                                 f"{None if init is None else tuple(init.shape)}")
            start = max(0, round(strength * diffusion.num_timesteps) - 1)
            t = torch.full((num_images,), start, device=self.device, dtype=torch.long)
            eps = torch.randn(shape, generator=generator, device=self.device)
            noise = diffusion.q_sample(init.to(self.device), t, eps)
        common = dict(model_kwargs=model_kwargs, denoised_fn=denoised_fn, noise=noise, generator=generator,
                      device=self.device, progress=progress, return_trajectory=return_trajectory, start=start)
        model_fn = model_fn or self.model_fn
        if sampler == "dpm++2m":
            return dpm_solver_sample_loop(diffusion, model_fn, shape, **common)
        if sampler == "ddim":
            return ddim_sample_loop(diffusion, model_fn, shape, eta=eta, cond_fn=cond_fn, **common)
        return p_sample_loop(diffusion, model_fn, shape, cond_fn=cond_fn, **common)

    def __call__(self, num_images: int = 16, *, steps: int | str | None = None, sampler: str = "ancestral",
                 eta: float = 0.0, seed: int | None = 0, progress: bool = False) -> torch.Tensor:
        """Sample images [N, C, H, W] in [0, 1]. seed=None: a fresh random seed (not reproducible)."""
        x = self.sample(num_images, steps=steps, sampler=sampler, eta=eta, seed=seed, progress=progress)
        return to_unit(x)
