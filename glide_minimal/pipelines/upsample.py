"""The cascade's second stage (chapter 6): a super-resolution model, low-res images (+ captions) in."""
from __future__ import annotations

import torch

from ..checks import check_aug_level, check_finite_range, check_prompt, check_sampler, check_steps_type, make_generator
from ..conditioning import augment_low_res
from ..config import Config, low_res_size
from ..models.text import config_tokenizer
from ..speed import RELEASE_UPSAMPLE_SAMPLER, RELEASE_UPSAMPLE_STEPS, RELEASE_UPSAMPLE_TEMPERATURE
from .base import DiffusionPipeline, check_unit_range, to_unit

AUGMENT_STREAM = 1  # make_generator stream of the low-res augmentation noise (independent of x_T's draws)


class UpsamplePipeline(DiffusionPipeline):
    """The cascade's second stage (chapter 6): a super-resolution model, low-res images (+ captions) in.

        up = gm.load_pipeline("tutorial-text-upsample")
        big = up("a large red circle in the center", low_res=small)   # [N, 3, 16, 16] -> [N, 3, 64, 64], [0, 1]

    GLIDE's text-to-image settings are the defaults (speed.RELEASE_UPSAMPLE_*): the fast27 respacing sampled
    with DDIM (eta 0) from a starting noise x_T scaled by the temperature 0.997, and the conditional model
    alone (no guidance). (The release's inpainting notebook samples its upsampler ancestrally instead:
    InpaintPipeline's default.) aug_level s noises the low-res input by s forward steps first (cascaded
    diffusion's conditioning augmentation; the model is told s if it has model.aug_level_embed); None: the
    config's data.low_res_aug_sample.
    """

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | torch.device = "cpu", tokenizer=None):
        super().__init__(model, cfg, device)
        if not cfg.model.super_res:
            raise ValueError(f"{cfg.name!r} is not a super-resolution model (model.super_res is false)")
        if cfg.model.text_ctx and tokenizer is None:  # default: the one the config names
            tokenizer = config_tokenizer(cfg.model)
        self.tokenizer = tokenizer if cfg.model.text_ctx else None

    @property
    def low_res_size(self) -> int:
        """The side of the low-res images this upsampler was trained on (config.low_res_size)."""
        return low_res_size(self.cfg)

    @staticmethod
    def check_settings(steps, sampler, temperature, aug_level, prefix: str = "", num_timesteps: int | None = None):
        """The checks that need no model (a cascade runs them before loading its upsampler); num_timesteps:
        the upsampler's chain length T, the largest aug_level (None: not known yet)."""
        check_steps_type(steps, f"{prefix}steps")
        check_sampler(sampler, f"{prefix}sampler")
        check_finite_range(f"{prefix}temperature", temperature, 0, None, lo_open=True)
        check_aug_level(aug_level, num_timesteps)

    def check_upsampling(self, steps, sampler, eta, temperature, aug_level, seed, prefix: str = "") -> tuple[int, int]:
        """Check every upsampling setting against this model before any work: (aug level, seed) to use."""
        T = self.cfg.diffusion.num_timesteps
        self.check_settings(steps, sampler, temperature, aug_level, prefix, T)
        seed = self.check_sampling(steps, sampler, eta, seed, prefix)
        level = check_aug_level(self.cfg.data.low_res_aug_sample if aug_level is None else aug_level, T)
        return level, seed

    def check_low_res(self, low_res) -> None:
        """low_res must be [N, C, s, s] at the size s the upsampler was trained on."""
        c, s = self.cfg.model.in_channels, self.low_res_size
        if not isinstance(low_res, torch.Tensor) or tuple(low_res.shape[1:]) != (c, s, s) or len(low_res) == 0:
            shape = tuple(low_res.shape) if isinstance(low_res, torch.Tensor) else type(low_res).__name__
            raise ValueError(f"low_res must be [N, {c}, {s}, {s}] (this upsampler was trained on {s}x{s} inputs: "
                             f"model.image_size {self.cfg.model.image_size} / {self.cfg.model.image_size // s}), "
                             f"got {shape}")

    def check_base_size(self, base_cfg: Config) -> None:
        """A cascade's base model must make the images this upsampler takes."""
        b, s = base_cfg.model.image_size, self.low_res_size
        if b != s:
            raise ValueError(f"the base model makes {b}x{b} images but the upsampler {self.cfg.name!r} takes {s}x{s} "
                             "low-res inputs: pair the base model with an upsampler trained on its size")

    def check_stage(self, base_cfg: Config, steps, sampler, temperature, aug_level, seed: int) -> "UpsamplePipeline":
        """Check this upsampler as the second stage of a cascade after a base model of `base_cfg`: its settings
        (named upsample_* in errors, as the cascade's arguments are) and the sizes. Returns self."""
        self.check_upsampling(steps, sampler, 0.0, temperature, aug_level, seed, prefix="upsample_")
        self.check_base_size(base_cfg)
        return self

    def augment(self, low_res: torch.Tensor, level: int, seed: int) -> torch.Tensor:
        """low_res [N, C, s, s] after `level` forward steps of the full chain (conditioning.augment_low_res),
        with noise from the seed's augmentation stream."""
        g = make_generator(seed, self.device, stream=AUGMENT_STREAM)
        noise = torch.randn(low_res.shape, generator=g, device=low_res.device, dtype=low_res.dtype)
        levels = torch.full((len(low_res),), level, dtype=torch.long, device=self.device)
        return augment_low_res(self.diffusion(self.cfg.diffusion.num_timesteps), low_res, levels, noise)

    def upsample(self, low_res: torch.Tensor, prompts: list[str] | None = None, *,
                 steps: int | str | None = RELEASE_UPSAMPLE_STEPS, sampler: str = RELEASE_UPSAMPLE_SAMPLER,
                 eta: float = 0.0, temperature: float = RELEASE_UPSAMPLE_TEMPERATURE, aug_level: int | None = None,
                 seed: int | None = 0, model_kwargs: dict | None = None, model_fn=None, denoised_fn=None,
                 progress: bool = False) -> torch.Tensor:
        """low_res [N, C, s, s] in model space [-1, 1] -> [N, C, H, W] in [-1, 1] (H = model.image_size,
        s = low_res_size)."""
        level, seed = self.check_upsampling(steps, sampler, eta, temperature, aug_level, seed)
        self.check_low_res(low_res)
        n = len(low_res)
        kwargs = dict(model_kwargs or {})
        if self.tokenizer is not None:
            if prompts is None or isinstance(prompts, str) or len(prompts) != n:
                raise ValueError(f"this upsampler is text-conditional: pass one prompt per low-res image ({n})")
            kwargs.update(self.tokens(check_prompt(list(prompts))))
        low_res = low_res.to(self.device, torch.float32)
        kwargs["low_res"] = self.augment(low_res, level, seed) if level > 0 else low_res
        if self.cfg.model.aug_level_embed:
            kwargs["aug_level"] = torch.full((n,), level, dtype=torch.long, device=self.device)
        return self.sample(n, steps=steps, sampler=sampler, eta=eta, seed=seed, model_kwargs=kwargs, model_fn=model_fn,
                           denoised_fn=denoised_fn, noise_scale=temperature, progress=progress)

    def __call__(self, prompt=None, low_res: torch.Tensor | None = None, *,
                 steps: int | str | None = RELEASE_UPSAMPLE_STEPS, sampler: str = RELEASE_UPSAMPLE_SAMPLER,
                 eta: float = 0.0, temperature: float = RELEASE_UPSAMPLE_TEMPERATURE, aug_level: int | None = None,
                 seed: int | None = 0, progress: bool = False) -> torch.Tensor:
        """low_res [N, C, s, s] in [0, 1] (+ a prompt, or one per image) -> [N, C, H, W] in [0, 1].

        s is the size the upsampler was trained on (low_res_size: 16 for tutorial-text-upsample). seed=None:
        a fresh random seed.
        """
        prompts = None
        if self.tokenizer is not None:
            prompt = check_prompt(prompt)
        _, seed = self.check_upsampling(steps, sampler, eta, temperature, aug_level, seed)
        self.check_low_res(low_res)
        check_unit_range(low_res, "low_res")
        n = len(low_res)
        if self.tokenizer is not None:
            prompts = [prompt] * n if isinstance(prompt, str) else prompt
            if len(prompts) != n:
                raise ValueError(f"got {len(prompts)} prompts for {n} low-res images: pass one prompt per image, "
                                 "or a single string for all")
            self.tokenizer.padded_tokens_and_mask(prompts)  # unknown words, wordless prompts
        out = self.upsample(low_res * 2 - 1, prompts, steps=steps, sampler=sampler, eta=eta, temperature=temperature,
                            aug_level=aug_level, seed=seed, progress=progress)
        return to_unit(out)
