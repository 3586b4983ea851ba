"""Text-to-image sampling with classifier-free or CLIP guidance (chapters 4-5), and the cascade (chapter 6):
the base model's images upsampled by its companion. `TextPipeline.__call__(upsample=True)` is the one cascade
of the package: `glide-minimal bench released` and chapter 8 time it too."""
from __future__ import annotations

import torch

from ..checks import check_count, check_finite_range, check_prompt, check_sampler_settings
from ..config import Config
from ..diffusion.guidance import classifier_free_model_fn, clip_cond_fn
from ..models.text import config_tokenizer
from ..speed import RELEASE_UPSAMPLE_SAMPLER, RELEASE_UPSAMPLE_STEPS, RELEASE_UPSAMPLE_TEMPERATURE
from .base import Companion, DiffusionPipeline, to_unit
from .upsample import UpsamplePipeline


def get_clip_tokens(clip_cfg, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions tokenized for a noised CLIP's own tokenizer and context: ([N, L] long, [N, L] bool)."""
    return config_tokenizer(clip_cfg).padded_tokens_and_mask(prompts)


class TextPipeline(DiffusionPipeline):
    """Text-to-image sampling with classifier-free or CLIP guidance (chapters 4-5).

        pipe = gm.load_pipeline("tutorial-text")
        images = pipe("a large red circle in the top left", num_images=4, guidance_scale=3.0, seed=0)
        images = pipe(["a small blue square in the center", "a large green cross on the left"])  # one each

    guidance="cfg": eps = eps("") + s (eps(caption) - eps("")), one batched forward (GLIDE Eq. 2; the
    model saw 20 % empty captions in training). guidance="clip": the text-conditional model steered by
    s * grad of the noised CLIP's similarity between x_t and the caption (GLIDE section 2.4, as the
    release's CLIP-guided sampler does); guidance="clip-unconditional": the same gradient steering the
    model given the empty caption, so the caption reaches the image only through the CLIP.
    guidance="none": the conditional model alone. The empty prompt "" is the unconditional model
    (guidance then has nothing to amplify); a prompt with no words ("!!!") is an error, not "".
    seed=None draws a fresh random seed (each call differs); an int seed makes the images reproducible.

    clip, upsampler: the companions (a model / an UpsamplePipeline, or a Companion that loads it on first
    use; gm.load_pipeline wires the ones its MANIFEST entry names). tokenizer: default, the one the config
    names (model.tokenizer).
    """

    GUIDANCE = ("cfg", "clip", "clip-unconditional", "none")

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | torch.device = "cpu",
                 clip: torch.nn.Module | Companion | None = None,
                 upsampler: UpsamplePipeline | Companion | None = None, tokenizer=None):
        super().__init__(model, cfg, device)
        self.tokenizer = tokenizer or config_tokenizer(cfg.model)
        self._clip = Companion.of(clip, "guidance='clip' needs a noised CLIP checkpoint, and none is registered "
                                        "for this pipeline; use guidance='cfg', or pass clip= to TextPipeline")
        self._upsampler = Companion.of(upsampler, "upsample=True needs an upsampler, and none is registered for "
                                                  "this pipeline; pass upsampler= to TextPipeline, or load a "
                                                  "shipped one with gm.load_pipeline")

    @property
    def upsampler(self) -> UpsamplePipeline:
        """The cascade's second stage used by upsample=True (loaded on first use)."""
        return self._upsampler.get()

    @property
    def clip(self) -> torch.nn.Module:
        """The noised CLIP used by guidance="clip" (loaded on first use)."""
        return self._clip.get()

    def prompts(self, prompt, num_images: int | None) -> list[str]:
        """One caption per image: a string repeated num_images (default 1) times, or a list (one each)."""
        prompt = check_prompt(prompt)
        if num_images is not None:
            num_images = check_count("num_images", num_images)
        if isinstance(prompt, str):
            return [prompt] * (1 if num_images is None else num_images)
        if num_images is not None and num_images != len(prompt):
            raise ValueError(f"got {len(prompt)} prompts but num_images={num_images}: a list of prompts gives one "
                             "image per prompt (leave num_images out, or pass a single string)")
        return prompt

    def check_guidance(self, guidance: str, guidance_scale: float) -> float:
        if not isinstance(guidance, str) or guidance not in self.GUIDANCE:
            raise ValueError(f"unknown guidance {guidance!r}; choose one of: {', '.join(self.GUIDANCE)}")
        return check_finite_range("guidance_scale", guidance_scale, 0)

    def guided_inputs(self, prompts: list[str], guidance: str, guidance_scale: float):
        """(model_kwargs, model_fn, cond_fn) that make the sampler follow the prompts with this guidance."""
        self.check_guidance(guidance, guidance_scale)
        kwargs, model_fn, cond_fn = self.tokens(prompts), None, None
        if guidance == "cfg":
            model_fn = classifier_free_model_fn(self.model_fn, guidance_scale, self.tokens([""] * len(prompts)),
                                                self.cfg.model.out_channels)
        elif guidance in ("clip", "clip-unconditional"):
            if not all(self.tokenizer.split(p) for p in prompts):
                raise ValueError(f"guidance={guidance!r} needs a caption for every image; \"\" has nothing to "
                                 "guide towards")
            clip_tokens, clip_mask = get_clip_tokens(self.clip.cfg, prompts)
            cond_fn = clip_cond_fn(self.clip, clip_tokens.to(self.device), clip_mask.to(self.device), guidance_scale)
            if guidance == "clip-unconditional":  # the model sees only "": the caption arrives through the CLIP alone
                kwargs = self.tokens([""] * len(prompts))
        return kwargs, model_fn, cond_fn

    def check_cascade(self, upsample_steps, upsample_sampler, upsample_temperature, aug_level,
                      seed: int) -> UpsamplePipeline:
        """The upsampler, after checking its settings: first what needs no model, then what needs its config."""
        UpsamplePipeline.check_settings(upsample_steps, upsample_sampler, upsample_temperature, aug_level,
                                        prefix="upsample_")
        return self.upsampler.check_stage(self.cfg, upsample_steps, upsample_sampler, upsample_temperature,
                                          aug_level, seed)

    def __call__(self, prompt, num_images: int | None = None, *, guidance_scale: float = 3.0, guidance: str = "cfg",
                 steps: int | str | None = None, sampler: str = "ancestral", eta: float = 0.0, seed: int | None = 0,
                 progress: bool = False, return_trajectory: bool = False, upsample: bool = False,
                 upsample_steps: int | str | None = RELEASE_UPSAMPLE_STEPS,
                 upsample_temperature: float = RELEASE_UPSAMPLE_TEMPERATURE,
                 upsample_sampler: str = RELEASE_UPSAMPLE_SAMPLER, aug_level: int | None = None):
        """Images [N, 3, H, W] in [0, 1] for the prompt(s).

        upsample=True: the cascade. The base model's images (guided as asked) go to the upsampler, which
        runs with the settings of GLIDE's text-to-image release (text2im.ipynb): upsample_steps (the
        27-step fast27 respacing), upsample_sampler ("ddim" with eta 0, as the release; or "ancestral"),
        only the starting noise x_T scaled by upsample_temperature (0.997), no guidance; aug_level: forward
        steps of noise added to the low-res images first (None: the upsampler config's
        data.low_res_aug_sample). Returns the upsampler's size (64 px for tutorial-text).
        """
        # Every argument is checked before any model loads or runs.
        prompts = self.prompts(prompt, num_images)
        self.check_guidance(guidance, guidance_scale)
        seed = self.check_sampling(steps, sampler, eta, seed)
        check_sampler_settings(sampler, eta, gradient_guidance=guidance.startswith("clip"))
        if upsample and return_trajectory:
            raise ValueError("return_trajectory records the base model only: pass upsample=False with it")
        self.tokens(prompts)  # unknown words, wordless prompts
        if upsample:
            upsampler = self.check_cascade(upsample_steps, upsample_sampler, upsample_temperature, aug_level, seed)
        kwargs, model_fn, cond_fn = self.guided_inputs(prompts, guidance, guidance_scale)
        out = self.sample(len(prompts), steps=steps, sampler=sampler, eta=eta, seed=seed, model_kwargs=kwargs,
                          cond_fn=cond_fn, model_fn=model_fn, progress=progress, return_trajectory=return_trajectory)
        if return_trajectory:
            return to_unit(out[0]), out[1]
        if upsample:
            out = upsampler.upsample(out, prompts, steps=upsample_steps, sampler=upsample_sampler,
                                     temperature=upsample_temperature, aug_level=aug_level, seed=seed,
                                     progress=progress)
        return to_unit(out)
