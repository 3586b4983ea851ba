"""User-facing pipelines: a shipped checkpoint in, images in [0, 1] out.

    pipe = gm.load_pipeline("tutorial-ddpm")
    images = pipe(num_images=16, steps=50, sampler="ddim", seed=0)   # [16, 1, 16, 16] in [0, 1]

A pipeline composes the pieces and adds nothing of its own: the model (a model_fn), a respaced
GaussianDiffusion, and a sampler from diffusion/sampling.py.

The cascade (chapter 6): a TextPipeline with upsample=True runs the base model, then the
`<name>-upsample` checkpoint (an UpsamplePipeline). Editing (chapter 7): load_pipeline("tutorial-inpaint")
is an InpaintPipeline over a group of four checkpoints, the text model's companions (pretrained.companion):
tutorial-text-inpaint and tutorial-text-upsample-inpaint (method="model"), tutorial-text and
tutorial-text-upsample (method="replace"), each loaded when first needed.

Every entry point checks all of its arguments before any model loads or runs, with the shared checks below
(check_finite_range, check_seed, check_count, ...): NaN, inf and bools are not numbers, 1.7 is not a seed or
a label, and an error names the argument, the bad value and what is valid. seed=None draws a fresh seed.
"""
from __future__ import annotations

import math
import numbers
import secrets

import torch

from .checkpoint import CheckpointError
from .config import Config, low_res_size
from .diffusion import GaussianDiffusion, ddim_sample_loop, p_sample_loop

SAMPLERS = ("ancestral", "ddim")
# Pipelines that are a group of checkpoints rather than one: name -> the text model whose companions form it.
INPAINT_PIPELINES = {"tutorial-inpaint": "tutorial-text", "tutorial-inpaint-gpu": "tutorial-text-gpu"}
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed's range
SEED_RULE = "a whole number in 0..2**64 - 1"
DEVICES = "cpu, cuda, cuda:N or mps"


# -- input checks: one rule each, shared by the pipelines and the CLI (every entry point checks before it works) --
def is_whole(value) -> bool:
    """An integer (Python or NumPy), not a bool: 3 but not 3.0, 3.7, True or "3"."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def range_text(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> str:
    """The range as messages write it: ">= 0", "> 0", "in [0, 1]", "in (0, 1]" ("" if unbounded)."""
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return ""


def finite_range_rule(value, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                      hi_open: bool = False) -> str | None:
    """None if value is a finite real number in the range; else the rule it breaks: "a finite number in
    [0, 1]" (not a number, a bool, NaN or +-inf) or "in [0, 1]" / ">= 0" (a number outside the range).

    NaN passes every comparison (`nan < 0` is False), so a bare range check would let it through to an
    all-NaN image; inf passes a one-sided one.
    """
    bounds = range_text(lo, hi, lo_open, hi_open)
    if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)):
        return f"a finite number {bounds}".rstrip()
    v = float(value)
    inside = (lo is None or v > lo or (v == lo and not lo_open)) and (hi is None or v < hi or (v == hi and not hi_open))
    return None if inside else bounds


def check_finite_range(name: str, value, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                       hi_open: bool = False) -> float:
    """value as a float, or a ValueError naming `name`, the value and the range (lo/hi None: unbounded)."""
    rule = finite_range_rule(value, lo, hi, lo_open=lo_open, hi_open=hi_open)
    if rule:
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return float(value)


def check_count(name: str, value, minimum: int = 1) -> int:
    """A whole number >= minimum (not a bool or a float), as an int."""
    if not is_whole(value) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_seed(seed) -> int:
    """The seed as an int in 0..2**64 - 1. None: a fresh random seed (each call samples differently; not
    reproducible). Floats (1.7 is not seed 1), bools and negative numbers are refused."""
    if seed is None:
        return secrets.randbits(64)
    if not is_whole(seed) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"seed must be {SEED_RULE}, or None for a fresh random seed; got {seed!r}")
    return int(seed)


def check_device(device) -> torch.device:
    """A device this machine has ("cpu", "cuda", "cuda:N", "mps"), or a ValueError naming the problem."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use {DEVICES}") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} is not available: this torch sees no CUDA GPU; use cpu")
        count = torch.cuda.device_count()
        if d.index is not None and d.index >= count:
            raise ValueError(f"device {str(device)!r} does not exist: this machine has {count} CUDA GPU(s), "
                             f"cuda:0..cuda:{count - 1}")
    elif d.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r} is not available on this machine; use cpu")
    elif d.type != "cpu":
        raise ValueError(f"unknown device {str(device)!r}; use {DEVICES}")
    return d


def check_sampler(sampler, name: str = "sampler") -> str:
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"unknown {name} {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    return sampler


def check_steps_type(steps, name: str = "steps"):
    """steps: None, a whole number or a respacing spec string (its range is checked against a config later)."""
    if steps is not None and not isinstance(steps, str) and not is_whole(steps):
        raise ValueError(f"{name} must be a step count or a respacing spec (\"100\", \"ddim50\", \"fast27\"), "
                         f"got {steps!r}")
    return steps


def check_aug_level(level, num_timesteps: int | None = None):
    """None (the config's default) or a whole number of forward steps in 0..T (T: the upsampler's chain)."""
    too_big = num_timesteps is not None and is_whole(level) and level > num_timesteps
    if level is not None and (not is_whole(level) or level < 0 or too_big):
        top = "T" if num_timesteps is None else num_timesteps
        raise ValueError(f"aug_level must be a whole number of forward steps in 0..{top} (0 = clean), got {level!r}")
    return level


def check_prompt(prompt) -> str | list[str]:
    """A string (kept) or a non-empty list or tuple of strings (as a list); anything else is an error."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    shown = repr(prompt) if len(repr(prompt)) <= 80 else repr(prompt)[:77] + "..."
    raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__} {shown}")


def make_generator(seed: int | None, device: torch.device, stream: int = 0) -> torch.Generator:
    """The generator of `seed` (None: a fresh random one); stream > 0 gives independent generators for the
    same seed (e.g. the low-res augmentation noise, the replacement noise), so adding one never shifts
    another's draws."""
    base = check_seed(seed)
    g = torch.Generator(device=device)
    g.manual_seed((base * 1_000_003 + stream) % 2**64 if stream else base)
    return g


class DiffusionPipeline:
    """Sampling from an unconditional diffusion model (chapter 1)."""

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | torch.device = "cpu"):
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self._diffusions: dict[str, GaussianDiffusion] = {}

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
        (an int: None draws a fresh one). prefix names the arguments ("upsample_" for a cascade's stage)."""
        check_sampler(sampler, f"{prefix}sampler")
        check_finite_range(f"{prefix}eta", eta, 0, 1)
        self.diffusion(steps, f"{prefix}steps")  # builds (and caches) the respaced chain: a bad spec fails here
        return check_seed(seed)

    def model_fn(self, x_t: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model(x_t, t, **kwargs)

    def sample(self, num_images: int, *, steps: int | str | None = None, sampler: str = "ancestral",
               eta: float = 0.0, seed: int | None = 0, model_kwargs: dict | None = None, cond_fn=None,
               model_fn=None, denoised_fn=None, noise_scale: float = 1.0, progress: bool = False,
               return_trajectory: bool = False):
        """x_0 in the model's [-1, 1] space, [N, C, H, W] (and a Trajectory with return_trajectory).

        model_fn: a wrapped model (e.g. classifier-free guidance); default: the plain model.
        denoised_fn: applied to every predicted x_0 (e.g. inpainting's known region).
        noise_scale: scales the starting noise x_T (GLIDE's upsampler samples with 0.997).
        eta: DDIM's noise, in [0, 1] (0: deterministic; 1: DDPM's variance); seed: None draws a fresh one.
        """
        num_images = check_count("num_images", num_images)
        noise_scale = check_finite_range("noise_scale", noise_scale, 0, None, lo_open=True)
        seed = self.check_sampling(steps, sampler, eta, seed)
        m = self.cfg.model
        shape = (num_images, m.in_channels, m.image_size, m.image_size)
        generator = make_generator(seed, self.device)
        noise = None
        if noise_scale != 1.0:  # drawn exactly as the loop would draw it, then scaled
            noise = torch.randn(shape, generator=generator, device=self.device) * noise_scale
        common = dict(model_kwargs=model_kwargs, cond_fn=cond_fn, denoised_fn=denoised_fn, noise=noise,
                      generator=generator, device=self.device, progress=progress, return_trajectory=return_trajectory)
        diffusion = self.diffusion(steps)
        model_fn = model_fn or self.model_fn
        if sampler == "ddim":
            return ddim_sample_loop(diffusion, model_fn, shape, eta=eta, **common)
        return p_sample_loop(diffusion, model_fn, shape, **common)

    def __call__(self, num_images: int = 16, *, steps: int | str | None = None, sampler: str = "ancestral",
                 eta: float = 0.0, seed: int | None = 0, progress: bool = False) -> torch.Tensor:
        """Sample images [N, C, H, W] in [0, 1]. seed=None: a fresh random seed (not reproducible)."""
        x = self.sample(num_images, steps=steps, sampler=sampler, eta=eta, seed=seed, progress=progress)
        return to_unit(x)


class ClassPipeline(DiffusionPipeline):
    """Class-conditional sampling with classifier-free or classifier guidance (chapters 2-3).

        pipe = gm.load_pipeline("tutorial-digits")
        images = pipe(labels=[3, 3, 7], guidance_scale=3.0, method="cfg", seed=0)

    method="cfg": one model trained with 20 % null labels; eps = eps_u + s (eps_c - eps_u).
    method="classifier": the model's unconditional branch (null label) steered by s * grad log p(y | x_t)
    of the noised classifier. guidance_scale 0 gives the unconditional model in both cases.
    """

    METHODS = ("cfg", "classifier", "none")

    def __init__(self, model, cfg: Config, device="cpu", classifier=None, classifier_name: str | None = None):
        super().__init__(model, cfg, device)
        self._classifier, self.classifier_name = classifier, classifier_name

    @property
    def classifier(self):
        if self._classifier is None:
            from . import pretrained

            if self.classifier_name is None:
                raise ValueError("method='classifier' needs a noised classifier; none is registered for this pipeline")
            self._classifier, _ = pretrained.load_model(self.classifier_name, self.device)
        return self._classifier

    def check_labels(self, labels) -> torch.Tensor:
        """labels: one whole number (a class index) or a list, tuple, range or integer tensor/array of them;
        floats (3.7 is not class 3) and bools are refused. Returns [N] long on the device."""
        import numpy as np

        k = self.cfg.model.num_classes
        rule = f"whole numbers (class indices 0..{k - 1})"
        if isinstance(labels, (torch.Tensor, np.ndarray)):
            tensor = torch.as_tensor(labels)
            if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
                raise ValueError(f"labels must be {rule}, got a {tensor.dtype} tensor")
            labels = tensor.reshape(-1).long()
        else:
            items = list(labels) if isinstance(labels, (list, tuple, range)) else [labels]
            bad = [x for x in items if not is_whole(x)]
            if bad:
                raise ValueError(f"labels must be {rule}, got {bad[0]!r}")
            labels = torch.tensor([int(x) for x in items], dtype=torch.long)
        bad = labels[(labels < 0) | (labels >= k)]
        if len(bad):
            raise ValueError(f"label {bad[0].item()} is out of range: this model knows classes 0..{k - 1}")
        if len(labels) == 0:
            raise ValueError("labels is empty: pass one class label per image, e.g. labels=[3, 3, 7]")
        return labels.to(self.device)

    def __call__(self, labels, *, guidance_scale: float = 3.0, method: str = "cfg", steps: int | str | None = None,
                 sampler: str = "ancestral", eta: float = 0.0, seed: int | None = 0, progress: bool = False,
                 return_trajectory: bool = False):
        """One image per label: [N, C, H, W] in [0, 1]. seed=None: a fresh random seed."""
        from .diffusion.guidance import classifier_cond_fn, classifier_free_model_fn

        if method not in self.METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(self.METHODS)}")
        guidance_scale = check_finite_range("guidance_scale", guidance_scale, 0)
        seed = self.check_sampling(steps, sampler, eta, seed)
        labels = self.check_labels(labels)
        null = torch.full_like(labels, self.cfg.model.num_classes)
        kwargs, model_fn, cond_fn = {"labels": labels}, None, None
        if method == "cfg":
            model_fn = classifier_free_model_fn(self.model_fn, guidance_scale, {"labels": null}, self.cfg.model.out_channels)
        elif method == "classifier":
            kwargs, cond_fn = {"labels": null}, classifier_cond_fn(self.classifier, labels, guidance_scale)
        out = self.sample(len(labels), steps=steps, sampler=sampler, eta=eta, seed=seed, model_kwargs=kwargs,
                          cond_fn=cond_fn, model_fn=model_fn, progress=progress, return_trajectory=return_trajectory)
        if return_trajectory:
            return to_unit(out[0]), out[1]
        return to_unit(out)


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
    """

    GUIDANCE = ("cfg", "clip", "clip-unconditional", "none")

    def __init__(self, model, cfg: Config, device="cpu", clip=None, clip_name: str | None = None,
                 upsampler: "UpsamplePipeline | None" = None, upsampler_name: str | None = None):
        super().__init__(model, cfg, device)
        from .models import get_tokenizer

        self.tokenizer = get_tokenizer(cfg.model.tokenizer, cfg.model.text_ctx)
        self._clip, self.clip_name = clip, clip_name
        self._upsampler, self.upsampler_name = upsampler, upsampler_name

    @property
    def upsampler(self) -> "UpsamplePipeline":
        """The cascade's second stage used by upsample=True (loaded on first use)."""
        if self._upsampler is None:
            if self.upsampler_name is None:
                raise ValueError("upsample=True needs an upsampler, and none is registered for this pipeline; pass "
                                 "upsampler= to TextPipeline, or load a shipped one with gm.load_pipeline")
            self._upsampler = load_stage(self.upsampler_name, "upsample", self.device)
        return self._upsampler

    @property
    def clip(self):
        """The noised CLIP used by guidance="clip" (loaded on first use)."""
        if self._clip is None:
            from . import pretrained

            if self.clip_name is None:
                raise ValueError("guidance='clip' needs a noised CLIP checkpoint, and none is registered for this "
                                 "pipeline; use guidance='cfg', or pass clip= to TextPipeline")
            self._clip, _ = pretrained.load_model(self.clip_name, self.device)
        return self._clip

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

    def tokens(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tokens, mask = self.tokenizer.padded_tokens_and_mask(prompts)
        return {"tokens": tokens.to(self.device), "mask": mask.to(self.device)}

    def check_guidance(self, guidance: str, guidance_scale: float) -> float:
        if not isinstance(guidance, str) or guidance not in self.GUIDANCE:
            raise ValueError(f"unknown guidance {guidance!r}; choose one of: {', '.join(self.GUIDANCE)}")
        return check_finite_range("guidance_scale", guidance_scale, 0)

    def guided_inputs(self, prompts: list[str], guidance: str, guidance_scale: float):
        """(model_kwargs, model_fn, cond_fn) that make the sampler follow the prompts with this guidance."""
        from .diffusion.guidance import classifier_free_model_fn, clip_cond_fn

        self.check_guidance(guidance, guidance_scale)
        kwargs, model_fn, cond_fn = self.tokens(prompts), None, None
        if guidance == "cfg":
            model_fn = classifier_free_model_fn(self.model_fn, guidance_scale, self.tokens([""] * len(prompts)),
                                                self.cfg.model.out_channels)
        elif guidance in ("clip", "clip-unconditional"):
            if not all(self.tokenizer.split(p) for p in prompts):
                raise ValueError(f"guidance={guidance!r} needs a caption for every image; \"\" has nothing to guide towards")
            clip_tokens, clip_mask = get_clip_tokens(self.clip.cfg, prompts)
            cond_fn = clip_cond_fn(self.clip, clip_tokens.to(self.device), clip_mask.to(self.device), guidance_scale)
            if guidance == "clip-unconditional":  # the model sees only "": the caption arrives through the CLIP alone
                kwargs = self.tokens([""] * len(prompts))
        return kwargs, model_fn, cond_fn

    def __call__(self, prompt, num_images: int | None = None, *, guidance_scale: float = 3.0, guidance: str = "cfg",
                 steps: int | str | None = None, sampler: str = "ancestral", eta: float = 0.0, seed: int | None = 0,
                 progress: bool = False, return_trajectory: bool = False, upsample: bool = False,
                 upsample_steps: int | str | None = "fast27", upsample_temperature: float = 0.997,
                 upsample_sampler: str = "ddim", aug_level: int | None = None):
        """Images [N, 3, H, W] in [0, 1] for the prompt(s).

        upsample=True: the cascade. The base model's images (guided as asked) go to the upsampler, which
        runs with the settings of GLIDE's text-to-image release (text2im.ipynb): upsample_steps (the
        27-step fast27 respacing), upsample_sampler ("ddim" with eta 0, as the release; or "ancestral"),
        only the starting noise x_T scaled by upsample_temperature (0.997), no guidance; aug_level: forward steps of noise added to the low-res images first
        (None: the upsampler config's data.low_res_aug_sample). Returns the upsampler's size (64 px for
        tutorial-text).
        """
        # Every argument is checked before any model loads or runs.
        prompts = self.prompts(prompt, num_images)
        self.check_guidance(guidance, guidance_scale)
        seed = self.check_sampling(steps, sampler, eta, seed)
        if upsample and return_trajectory:
            raise ValueError("return_trajectory records the base model only: pass upsample=False with it")
        self.tokens(prompts)  # unknown words, wordless prompts
        upsampler = None
        if upsample:
            UpsamplePipeline.check_settings(upsample_steps, upsample_sampler, upsample_temperature, aug_level,
                                            prefix="upsample_")  # what needs no upsampler, before loading it
            upsampler = self.upsampler
            upsampler.check_upsampling(upsample_steps, upsample_sampler, 0.0, upsample_temperature, aug_level, seed,
                                       prefix="upsample_")
            upsampler.check_base_size(self.cfg)
        kwargs, model_fn, cond_fn = self.guided_inputs(prompts, guidance, guidance_scale)
        out = self.sample(len(prompts), steps=steps, sampler=sampler, eta=eta, seed=seed, model_kwargs=kwargs,
                          cond_fn=cond_fn, model_fn=model_fn, progress=progress, return_trajectory=return_trajectory)
        if return_trajectory:
            return to_unit(out[0]), out[1]
        if upsample:
            out = upsampler.upsample(out, prompts, steps=upsample_steps, sampler=upsample_sampler,
                                     temperature=upsample_temperature, aug_level=aug_level, seed=seed, progress=progress)
        return to_unit(out)


class UpsamplePipeline(DiffusionPipeline):
    """The cascade's second stage (chapter 6): a super-resolution model, low-res images (+ captions) in.

        up = gm.load_pipeline("tutorial-text-upsample")
        big = up("a large red circle in the center", low_res=small)   # [N, 3, 16, 16] -> [N, 3, 64, 64], [0, 1]

    GLIDE's text-to-image settings are the defaults: the fast27 respacing sampled with DDIM (eta 0) from a
    starting noise x_T scaled by the temperature 0.997, and the conditional model alone (no guidance).
    (The release's inpainting notebook samples its upsampler ancestrally instead: InpaintPipeline's default.) aug_level s noises
    the low-res input by s forward steps first (cascaded diffusion's conditioning augmentation; the
    model is told s if it has model.aug_level_embed); None: the config's data.low_res_aug_sample.
    """

    def __init__(self, model, cfg: Config, device="cpu"):
        super().__init__(model, cfg, device)
        from .models import get_tokenizer

        if not cfg.model.super_res:
            raise ValueError(f"{cfg.name!r} is not a super-resolution model (model.super_res is false)")
        self.tokenizer = get_tokenizer(cfg.model.tokenizer, cfg.model.text_ctx) if cfg.model.text_ctx else None

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

    def upsample(self, low_res: torch.Tensor, prompts: list[str] | None = None, *, steps: int | str | None = "fast27",
                 sampler: str = "ddim", eta: float = 0.0, temperature: float = 0.997, aug_level: int | None = None,
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
            tokens, mask = self.tokenizer.padded_tokens_and_mask(check_prompt(list(prompts)))
            kwargs.update(tokens=tokens.to(self.device), mask=mask.to(self.device))
        low_res = low_res.to(self.device, torch.float32)
        if level > 0:  # z_s ~ q(z_s | z_0): s forward steps of the full chain (see conditioning.augment_low_res)
            T = self.cfg.diffusion.num_timesteps
            t = torch.full((n,), level - 1, dtype=torch.long, device=self.device)
            low_res = self.diffusion(T).q_sample(low_res, t, generator=make_generator(seed, self.device, stream=1))
        kwargs["low_res"] = low_res
        if self.cfg.model.aug_level_embed:
            kwargs["aug_level"] = torch.full((n,), level, dtype=torch.long, device=self.device)
        return self.sample(n, steps=steps, sampler=sampler, eta=eta, seed=seed, model_kwargs=kwargs, model_fn=model_fn,
                           denoised_fn=denoised_fn, noise_scale=temperature, progress=progress)

    def __call__(self, prompt=None, low_res: torch.Tensor | None = None, *, steps: int | str | None = "fast27",
                 sampler: str = "ddim", eta: float = 0.0, temperature: float = 0.997, aug_level: int | None = None,
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


def get_clip_tokens(clip_cfg, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions tokenized for a noised CLIP's own tokenizer and context: ([N, L] long, [N, L] bool)."""
    from .models import get_tokenizer

    return get_tokenizer(clip_cfg.tokenizer, clip_cfg.text_ctx).padded_tokens_and_mask(prompts)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] -> image space [0, 1]."""
    return ((x + 1) / 2).clamp(0, 1)


class InpaintPipeline:
    """Text-guided inpainting and editing through the cascade (chapter 7; GLIDE section 4.3).

        pipe = gm.load_pipeline("tutorial-inpaint")
        edited = pipe("a small blue square on the left", image=img, mask=mask, seed=0)   # [N, 3, 64, 64], [0, 1]

    image [N, 3, S, S] in [0, 1] and mask [N, 1, S, S] (1 = keep, 0 = fill) at the cascade's output size S
    (64 for tutorial-inpaint). The base stage works on the pair area-averaged to the base size (16 px; the
    mask shrinks with shapesworld.downsample_mask, so a small pixel is filled if any pixel it covers is),
    guided by classifier-free guidance; the upsampler stage works on the full pair, conditioned on the
    base stage's result. Each stage ends by copying the known pixels in, so the kept region of the result
    is the input, exactly.

    method="model": the inpainting models (extra image * mask and mask inputs), with the known region also
    put into every predicted x_0 (guidance.inpaint_denoised_fn). method="replace": the plain text models,
    shown the known region as q_sample(image, t) at every step (guidance.replacement_model_fn), the
    baseline GLIDE improves on. An all-fill mask (all zeros) keeps nothing: the result is text-to-image
    from the same models. An all-keep mask is an error (nothing to fill).

    The four models are the text model `text_name`'s companions (pretrained.companion): "<text>-inpaint",
    "<text>-upsample-inpaint" (method="model"), "<text>" and "<text>-upsample" (method="replace"); each is
    loaded on first use, or passed in as a pipeline.
    """

    METHODS = ("model", "replace")

    def __init__(self, text_name: str | None = None, *, base=None, upsampler=None, text=None, text_upsampler=None,
                 device: str | torch.device = "cpu"):
        self.text_name, self.device = text_name, torch.device(device)
        self._stages = {"inpaint": base, "upsample-inpaint": upsampler, "": text, "upsample": text_upsampler}

    def stage(self, role: str) -> DiffusionPipeline:
        """The pipeline of one model of the group: "inpaint", "upsample-inpaint", "" (text) or "upsample"."""
        if self._stages[role] is None:
            from . import pretrained

            if self.text_name is None:
                raise ValueError(f"no {STAGES[role][0]} was passed to this InpaintPipeline and no text_name names one")
            name = pretrained.companion(self.text_name, role) if role else self.text_name
            self._stages[role] = load_stage(name, role, self.device)
        return self._stages[role]

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

    def __call__(self, prompt, image: torch.Tensor, mask: torch.Tensor, *, method: str = "model",
                 guidance_scale: float = 3.0, steps: int | str | None = None, sampler: str = "ancestral",
                 eta: float = 0.0, seed: int | None = 0, upsample_steps: int | str | None = "fast27",
                 upsample_temperature: float = 0.997, upsample_sampler: str = "ancestral", aug_level: int | None = None,
                 progress: bool = False, return_low_res: bool = False):
        """Edited images [N, 3, S, S] in [0, 1] (and the base stage's [N, 3, s, s] with return_low_res).

        The upsampler stage samples ancestrally over fast27 from x_T scaled by 0.997, as the release's
        inpainting notebook does (its text-to-image notebook uses DDIM instead: TextPipeline's default).

        prompt: one string for every image, or a list with one per image ("" is unconditional).
        """
        from .conditioning import area_downsample
        from .diffusion.guidance import inpaint_denoised_fn, replacement_model_fn
        from .shapesworld import downsample_mask

        # Every argument is checked before any model loads or runs: first what needs no model, ...
        if not isinstance(method, str) or method not in self.METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(self.METHODS)}")
        prompt = check_prompt(prompt)
        check_finite_range("guidance_scale", guidance_scale, 0)
        check_steps_type(steps)
        check_sampler(sampler)
        check_finite_range("eta", eta, 0, 1)
        seed = check_seed(seed)
        UpsamplePipeline.check_settings(upsample_steps, upsample_sampler, upsample_temperature, aug_level,
                                        prefix="upsample_")
        # ... then what needs the models' configs.
        base = self.stage("inpaint" if method == "model" else "")
        up = self.stage("upsample-inpaint" if method == "model" else "upsample")
        base.check_sampling(steps, sampler, eta, seed)
        up.check_upsampling(upsample_steps, upsample_sampler, 0.0, upsample_temperature, aug_level, seed,
                            prefix="upsample_")
        up.check_base_size(base.cfg)
        size, small = up.cfg.model.image_size, base.cfg.model.image_size
        image, mask = self.check_inputs(image, mask, size)
        n = len(image)
        prompts = [prompt] * n if isinstance(prompt, str) else prompt
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
            model_fn = replacement_model_fn(model_fn, full, x_small, keep_small, make_generator(seed, self.device, 2))
        low = base.sample(n, steps=steps, sampler=sampler, eta=eta, seed=seed, model_kwargs=kwargs, model_fn=model_fn,
                          denoised_fn=denoised_fn, progress=progress)
        low = torch.where(keep_small > 0.5, x_small, low)

        # Stage 2, full size: the upsampler, conditioned on stage 1's result (GLIDE's settings, no guidance).
        kwargs, model_fn, denoised_fn = {}, None, None
        if method == "model":
            kwargs = {"inpaint_image": x, "inpaint_mask": keep}
            denoised_fn = inpaint_denoised_fn(x, keep)
        else:
            full = up.diffusion(up.cfg.diffusion.num_timesteps)
            model_fn = replacement_model_fn(up.model_fn, full, x, keep, make_generator(seed, self.device, 3))
        out = up.upsample(low, prompts, steps=upsample_steps, sampler=upsample_sampler, temperature=upsample_temperature,
                          aug_level=aug_level, seed=seed, model_kwargs=kwargs, model_fn=model_fn,
                          denoised_fn=denoised_fn, progress=progress)
        out = torch.where(keep > 0.5, image.to(self.device), to_unit(out))  # the kept region, exactly the input
        return (out, to_unit(low)) if return_low_res else out


def check_unit_range(x: torch.Tensor, name: str) -> None:
    """Images must be floats in [0, 1] (NaN fails too)."""
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype} (uint8 images: divide by 255)")
    if not ((x >= 0) & (x <= 1)).all():
        raise ValueError(f"{name} values must lie in [0, 1]; got min {x.min().item():.4g}, max {x.max().item():.4g} "
                         "(model-space images in [-1, 1]: pass (x + 1) / 2)")


# role -> (what the model must be, the script that trains it); pretrained.companion(text name, role) names it.
STAGES = {
    "": ("a text-conditional base model", "scripts/train_ch4.sh", dict(super_res=False, inpaint=False)),
    "upsample": ("an upsampler (model.super_res)", "scripts/train_ch6.sh", dict(super_res=True, inpaint=False)),
    "inpaint": ("a base inpainting model (model.inpaint)", "scripts/train_ch7.sh", dict(super_res=False, inpaint=True)),
    "upsample-inpaint": ("an inpainting upsampler (model.inpaint and model.super_res)", "scripts/train_ch7.sh",
                         dict(super_res=True, inpaint=True)),
}


def load_stage(name: str, role: str, device: str | torch.device) -> DiffusionPipeline:
    """The shipped checkpoint `name` as the pipeline of a cascade stage (`role`, see STAGES); clear errors if
    it is not shipped or is the wrong kind of model."""
    from . import pretrained

    what, script, flags = STAGES[role]
    if name not in pretrained.available():
        raise CheckpointError(f"this needs {what}: the checkpoint {name!r}, which is not in any of the places "
                              f"searched (train and publish it with {script}); looked in: {pretrained.looked_in()}")
    model, cfg = pretrained.load_model(name, device)
    wrong = [k for k, v in flags.items() if getattr(cfg.model, k) != v]
    if wrong or not cfg.model.text_ctx:
        raise CheckpointError(f"{name!r} should be {what} with text conditioning, but its config has "
                              + ", ".join(f"model.{k} = {getattr(cfg.model, k)}" for k in [*wrong, "text_ctx"]))
    return UpsamplePipeline(model, cfg, device) if cfg.model.super_res else TextPipeline(model, cfg, device)


def load_pipeline(name: str, device: str | torch.device | None = None):
    """A pipeline over a shipped checkpoint (see `gm.pretrained.available()`); no network.

    A text checkpoint gives a TextPipeline whose upsample=True uses companion(name, "upsample"), and whose
    CLIP guidance uses companion(name, "clip"); an upsampler gives an UpsamplePipeline; "tutorial-inpaint"
    (and "-gpu") and every inpainting checkpoint give the InpaintPipeline of their group (see InpaintPipeline).
    """
    from . import pretrained

    device = check_device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in INPAINT_PIPELINES:
        group = [INPAINT_PIPELINES[name]] + [pretrained.companion(INPAINT_PIPELINES[name], r) for r in STAGES if r]
        if not set(group) & set(pretrained.available()):
            raise KeyError(f"pipeline {name!r} needs the checkpoints {', '.join(group)}, and none of them is in any "
                           "of the places searched (scripts/train_ch4.sh, train_ch6.sh, train_ch7.sh make them); "
                           f"looked in: {pretrained.looked_in()}")
        return InpaintPipeline(INPAINT_PIPELINES[name], device=device)
    model, cfg = pretrained.load_model(name, device)
    if cfg.task != "diffusion":
        raise ValueError(f"{name!r} is a {cfg.task} checkpoint, not a diffusion model; pipelines: "
                         f"{', '.join(n for n in pretrained.available() if pretrained.entry(n).get('kind') == 'diffusion')}")
    if cfg.model.inpaint:
        text_name = pretrained.strip_role(name, ("inpaint", "upsample-inpaint"))
        stage = UpsamplePipeline(model, cfg, device) if cfg.model.super_res else TextPipeline(model, cfg, device)
        return InpaintPipeline(text_name, device=device, **{"upsampler" if cfg.model.super_res else "base": stage})
    if cfg.model.super_res:
        return UpsamplePipeline(model, cfg, device)
    if cfg.model.num_classes:
        classifier = f"{name}-classifier" if f"{name}-classifier" in pretrained.available() else None
        return ClassPipeline(model, cfg, device, classifier_name=classifier)
    if cfg.model.text_ctx:
        clip = pretrained.companion(name, "clip")
        return TextPipeline(model, cfg, device, clip_name=clip if clip in pretrained.available() else None,
                            upsampler_name=pretrained.companion(name, "upsample"))
    return DiffusionPipeline(model, cfg, device)
