"""Text-guided inpainting and editing through the cascade (chapter 7; GLIDE section 4.3)."""
from __future__ import annotations

import torch

from ..checks import check_finite_range, check_prompt, check_sampler, check_seed, check_steps_type, make_generator
from ..diffusion.guidance import inpaint_denoised_fn, replacement_model_fn
from ..masks import area_downsample, downsample_mask
from ..speed import RELEASE_UPSAMPLE_STEPS, RELEASE_UPSAMPLE_TEMPERATURE
from .base import Companion, DiffusionPipeline, check_unit_range, to_unit
from .text import TextPipeline
from .upsample import UpsamplePipeline

# make_generator streams of the replacement noise (independent of x_T's and the augmentation's draws)
BASE_REPLACEMENT_STREAM, UPSAMPLE_REPLACEMENT_STREAM = 2, 3


class InpaintPipeline:
    """Text-guided inpainting and editing through the cascade (chapter 7; GLIDE section 4.3).

        pipe = gm.load_pipeline("tutorial-inpaint")
        edited = pipe("a small blue square on the left", image=img, mask=mask, seed=0)   # [N, 3, 64, 64], [0, 1]

    image [N, 3, S, S] in [0, 1] and mask [N, 1, S, S] (1 = keep, 0 = fill) at the cascade's output size S
    (64 for tutorial-inpaint). The base stage works on the pair area-averaged to the base size (16 px; the
    mask shrinks with masks.downsample_mask, so a small pixel is filled if any pixel it covers is),
    guided by classifier-free guidance; the upsampler stage works on the full pair, conditioned on the
    base stage's result. Each stage ends by copying the known pixels in, so the kept region of the result
    is the input, exactly.

    method="model": the inpainting models (extra image * mask and mask inputs), with the known region also
    put into every predicted x_0 (guidance.inpaint_denoised_fn). method="replace": the plain text models,
    shown the known region as q_sample(image, t) at every step (guidance.replacement_model_fn), the
    baseline GLIDE improves on. An all-fill mask (all zeros) keeps nothing: the result is text-to-image
    from the same models. An all-keep mask is an error (nothing to fill).

    The four stages (see ROLES) are pipelines, or Companions that load them on first use (gm.load_pipeline
    wires the ones the text model's MANIFEST entry names).
    """

    METHODS = ("model", "replace")
    # role -> what its model must be: (description, model.super_res, model.inpaint)
    ROLES = {"inpaint": ("a base inpainting model (model.inpaint)", False, True),
             "upsample-inpaint": ("an inpainting upsampler (model.inpaint and model.super_res)", True, True),
             "text": ("a text-conditional base model", False, False),
             "upsample": ("an upsampler (model.super_res)", True, False)}

    def __init__(self, *, base=None, upsampler=None, text=None, text_upsampler=None,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        given = {"inpaint": base, "upsample-inpaint": upsampler, "text": text, "upsample": text_upsampler}
        self._stages = {role: Companion.of(value, f"no {self.ROLES[role][0]} was given to this InpaintPipeline")
                        for role, value in given.items()}

    def stage(self, role: str) -> DiffusionPipeline:
        """The pipeline of one model of the group: "inpaint", "upsample-inpaint", "text" or "upsample"."""
        if role not in self.ROLES:
            raise ValueError(f"unknown stage {role!r}; choose one of: {', '.join(self.ROLES)}")
        return self._stages[role].get()

    def check_inputs(self, image, mask, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """image [N, 3, size, size] floats in [0, 1] and a binary mask [N, 1, size, size]; clear errors otherwise."""
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image has shape {shape}; this pipeline edits [N, 3, {size}, {size}] images in [0, 1] "
                             "(the cascade's output size)")
        check_unit_range(image, "image")
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (len(image), 1, size, size):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask has shape {shape} but the image is {tuple(image.shape)}; the mask must be "
                             f"[{len(image)}, 1, {size}, {size}] with 1 = keep, 0 = fill")
        mask = mask.float()
        binary = (mask == 0) | (mask == 1)
        if not binary.all():
            raise ValueError(f"mask must be binary (1 = keep, 0 = fill); found the value {mask[~binary][0].item():g}")
        full = mask.flatten(1).all(dim=1)
        if full.any():
            raise ValueError(f"mask {full.nonzero()[0].item()} keeps every pixel, so there is nothing to fill: set the "
                             "region to repaint to 0")
        return image.float(), mask

    def check_settings(self, prompt, method, guidance_scale, steps, sampler, eta, seed, upsample_steps,
                       upsample_sampler, upsample_temperature, aug_level) -> tuple[TextPipeline, UpsamplePipeline, int]:
        """Every setting, before any model runs: first what needs no model, then what needs the models'
        configs. Returns (base stage, upsampler stage, seed)."""
        if not isinstance(method, str) or method not in self.METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(self.METHODS)}")
        check_prompt(prompt)
        check_finite_range("guidance_scale", guidance_scale, 0)
        check_steps_type(steps)
        check_sampler(sampler)
        check_finite_range("eta", eta, 0, 1)
        seed = check_seed(seed)
        UpsamplePipeline.check_settings(upsample_steps, upsample_sampler, upsample_temperature, aug_level,
                                        prefix="upsample_")
        base = self.stage("inpaint" if method == "model" else "text")
        up = self.stage("upsample-inpaint" if method == "model" else "upsample")
        base.check_sampling(steps, sampler, eta, seed)
        up.check_stage(base.cfg, upsample_steps, upsample_sampler, upsample_temperature, aug_level, seed)
        return base, up, seed

    def __call__(self, prompt, image: torch.Tensor, mask: torch.Tensor, *, method: str = "model",
                 guidance_scale: float = 3.0, steps: int | str | None = None, sampler: str = "ancestral",
                 eta: float = 0.0, seed: int | None = 0, upsample_steps: int | str | None = RELEASE_UPSAMPLE_STEPS,
                 upsample_temperature: float = RELEASE_UPSAMPLE_TEMPERATURE, upsample_sampler: str = "ancestral",
                 aug_level: int | None = None, progress: bool = False, return_low_res: bool = False,
                 strength: float = 1.0):
        """Edited images [N, 3, S, S] in [0, 1] (and the base stage's [N, 3, s, s] with return_low_res).

        strength < 1 edits from a sketch (GLIDE's sketch edits, SDEdit-style: Meng et al. 2022): the base stage
        starts from `image` itself, the rough sketch painted into the region to fill, noised `strength` of the
        way up the chain, instead of from pure noise; lower keeps more of the sketch's colors and layout.

        The upsampler stage samples ancestrally over fast27 from x_T scaled by 0.997, as the release's
        inpainting notebook does (its text-to-image notebook uses DDIM instead: TextPipeline's default).

        prompt: one string for every image, or a list with one per image ("" is unconditional).
        """
        check_finite_range("strength", strength, 0, 1, lo_open=True)
        base, up, seed = self.check_settings(prompt, method, guidance_scale, steps, sampler, eta, seed,
                                             upsample_steps, upsample_sampler, upsample_temperature, aug_level)
        size, small = up.cfg.model.image_size, base.cfg.model.image_size
        image, mask = self.check_inputs(image, mask, size)
        n = len(image)
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} images: pass one prompt (a string) per image, or a "
                             "single string for all")
        base.tokens(prompts)  # unknown words, wordless prompts
        x, keep = image.to(self.device) * 2 - 1, mask.to(self.device)
        x_small = area_downsample(x, small)
        keep_small = torch.stack([downsample_mask(m, small) for m in keep])  # any pixel to fill fills the small one

        # Stage 1, base size: classifier-free guided, as text-to-image.
        kwargs, model_fn, _ = base.guided_inputs(prompts, "cfg", guidance_scale)
        denoised_fn = None
        if method == "model":
            kwargs.update(inpaint_image=x_small, inpaint_mask=keep_small)  # duplicated into both CFG halves
            denoised_fn = inpaint_denoised_fn(x_small, keep_small)
        else:
            full = base.diffusion(base.cfg.diffusion.num_timesteps)
            g = make_generator(seed, self.device, BASE_REPLACEMENT_STREAM)
            model_fn = replacement_model_fn(model_fn, full, x_small, keep_small, g)
        low = base.sample(n, steps=steps, sampler=sampler, eta=eta, seed=seed, model_kwargs=kwargs, model_fn=model_fn,
                          denoised_fn=denoised_fn, progress=progress, init=x_small, strength=strength)
        low = torch.where(keep_small > 0.5, x_small, low)

        # Stage 2, full size: the upsampler, conditioned on stage 1's result (GLIDE's settings, no guidance).
        kwargs, model_fn, denoised_fn = {}, None, None
        if method == "model":
            kwargs = {"inpaint_image": x, "inpaint_mask": keep}
            denoised_fn = inpaint_denoised_fn(x, keep)
        else:
            full = up.diffusion(up.cfg.diffusion.num_timesteps)
            g = make_generator(seed, self.device, UPSAMPLE_REPLACEMENT_STREAM)
            model_fn = replacement_model_fn(up.model_fn, full, x, keep, g)
        out = up.upsample(low, prompts, steps=upsample_steps, sampler=upsample_sampler,
                          temperature=upsample_temperature, aug_level=aug_level, seed=seed, model_kwargs=kwargs,
                          model_fn=model_fn, denoised_fn=denoised_fn, progress=progress)
        out = torch.where(keep > 0.5, image.to(self.device), to_unit(out))  # the kept region, exactly the input
        return (out, to_unit(low)) if return_low_res else out
