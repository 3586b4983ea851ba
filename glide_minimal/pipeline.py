"""User-facing pipelines: a shipped checkpoint in, images in [0, 1] out.

    pipe = gm.load_pipeline("tutorial-ddpm")
    images = pipe(num_images=16, steps=50, sampler="ddim", seed=0)   # [16, 1, 16, 16] in [0, 1]

A pipeline composes the pieces and adds nothing of its own: the model (a model_fn), a respaced
GaussianDiffusion, and a sampler from diffusion/sampling.py.
"""
from __future__ import annotations

import torch

from .config import Config
from .diffusion import GaussianDiffusion, ddim_sample_loop, p_sample_loop

SAMPLERS = ("ancestral", "ddim")


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


class DiffusionPipeline:
    """Sampling from an unconditional diffusion model (chapter 1)."""

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | torch.device = "cpu"):
        self.model, self.cfg, self.device = model, cfg, torch.device(device)
        self._diffusions: dict[str, GaussianDiffusion] = {}

    def diffusion(self, steps: int | str | None = None) -> GaussianDiffusion:
        """The chain for `steps`: an int or a respacing spec ("100", "ddim50", "fast27"); None: the config's."""
        spec = str(steps if steps is not None else self.cfg.diffusion.sample_respacing)
        if spec not in self._diffusions:
            if spec.isdigit() and not 0 < int(spec) <= self.cfg.diffusion.num_timesteps:
                raise ValueError(f"steps must be in 1..{self.cfg.diffusion.num_timesteps}, got {spec}")
            full = str(self.cfg.diffusion.num_timesteps)
            self._diffusions[spec] = GaussianDiffusion.from_config(self.cfg.diffusion, None if spec == full else spec)
        return self._diffusions[spec]

    def model_fn(self, x_t: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model(x_t, t, **kwargs)

    def sample(self, num_images: int, *, steps: int | str | None = None, sampler: str = "ancestral",
               eta: float = 0.0, seed: int | None = 0, model_kwargs: dict | None = None, cond_fn=None,
               model_fn=None, progress: bool = False, return_trajectory: bool = False):
        """x_0 in the model's [-1, 1] space, [N, C, H, W] (and a Trajectory with return_trajectory).

        model_fn: a wrapped model (e.g. classifier-free guidance); default: the plain model.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        m = self.cfg.model
        shape = (num_images, m.in_channels, m.image_size, m.image_size)
        common = dict(model_kwargs=model_kwargs, cond_fn=cond_fn, generator=make_generator(seed, self.device),
                      device=self.device, progress=progress, return_trajectory=return_trajectory)
        diffusion = self.diffusion(steps)
        model_fn = model_fn or self.model_fn
        if sampler == "ddim":
            return ddim_sample_loop(diffusion, model_fn, shape, eta=eta, **common)
        return p_sample_loop(diffusion, model_fn, shape, **common)

    def __call__(self, num_images: int = 16, *, steps: int | str | None = None, sampler: str = "ancestral",
                 eta: float = 0.0, seed: int | None = 0, progress: bool = False) -> torch.Tensor:
        """Sample images [N, C, H, W] in [0, 1]."""
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
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        k = self.cfg.model.num_classes
        bad = labels[(labels < 0) | (labels >= k)]
        if len(bad):
            raise ValueError(f"label {bad[0].item()} is out of range: this model knows classes 0..{k - 1}")
        if len(labels) == 0:
            raise ValueError("labels is empty: pass one class label per image, e.g. labels=[3, 3, 7]")
        return labels.to(self.device)

    def __call__(self, labels, *, guidance_scale: float = 3.0, method: str = "cfg", steps: int | str | None = None,
                 sampler: str = "ancestral", eta: float = 0.0, seed: int | None = 0, progress: bool = False,
                 return_trajectory: bool = False):
        """One image per label: [N, C, H, W] in [0, 1]."""
        from .diffusion.guidance import classifier_cond_fn, classifier_free_model_fn

        if method not in self.METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(self.METHODS)}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
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
    s * grad of the noised CLIP's similarity between x_t and the caption (GLIDE Eq. 4, as the release's
    CLIP-guided sampler does). guidance="none": the conditional model alone. The empty prompt "" is
    the unconditional model (guidance then has nothing to amplify).
    """

    GUIDANCE = ("cfg", "clip", "none")

    def __init__(self, model, cfg: Config, device="cpu", clip=None, clip_name: str | None = None):
        super().__init__(model, cfg, device)
        from .models import get_tokenizer

        self.tokenizer = get_tokenizer(cfg.model.tokenizer, cfg.model.text_ctx)
        self._clip, self.clip_name = clip, clip_name

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
        if isinstance(prompt, str):
            if num_images is not None and num_images < 1:
                raise ValueError(f"num_images must be >= 1, got {num_images}")
            return [prompt] * (1 if num_images is None else num_images)
        prompts = list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompt must be a string or a non-empty list of strings")
        if num_images is not None and num_images != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but num_images={num_images}: a list of prompts gives one "
                             "image per prompt (leave num_images out, or pass a single string)")
        return prompts

    def tokens(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        tokens, mask = self.tokenizer.padded_tokens_and_mask(prompts)
        return {"tokens": tokens.to(self.device), "mask": mask.to(self.device)}

    def __call__(self, prompt, num_images: int | None = None, *, guidance_scale: float = 3.0, guidance: str = "cfg",
                 steps: int | str | None = None, sampler: str = "ancestral", eta: float = 0.0, seed: int | None = 0,
                 progress: bool = False, return_trajectory: bool = False):
        """Images [N, 3, H, W] in [0, 1] for the prompt(s)."""
        from .diffusion.guidance import classifier_free_model_fn, clip_cond_fn

        if guidance not in self.GUIDANCE:
            raise ValueError(f"unknown guidance {guidance!r}; choose one of: {', '.join(self.GUIDANCE)}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        prompts = self.prompts(prompt, num_images)
        kwargs, model_fn, cond_fn = self.tokens(prompts), None, None
        if guidance == "cfg":
            model_fn = classifier_free_model_fn(self.model_fn, guidance_scale, self.tokens([""] * len(prompts)),
                                                self.cfg.model.out_channels)
        elif guidance == "clip":
            if not all(self.tokenizer.split(p) for p in prompts):
                raise ValueError("guidance='clip' needs a caption for every image; \"\" has nothing to guide towards")
            clip_tokens, clip_mask = get_clip_tokens(self.clip.cfg, prompts)
            cond_fn = clip_cond_fn(self.clip, clip_tokens.to(self.device), clip_mask.to(self.device), guidance_scale)
        out = self.sample(len(prompts), steps=steps, sampler=sampler, eta=eta, seed=seed, model_kwargs=kwargs,
                          cond_fn=cond_fn, model_fn=model_fn, progress=progress, return_trajectory=return_trajectory)
        if return_trajectory:
            return to_unit(out[0]), out[1]
        return to_unit(out)


def get_clip_tokens(clip_cfg, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions tokenized for a noised CLIP's own tokenizer and context: ([N, L] long, [N, L] bool)."""
    from .models import get_tokenizer

    return get_tokenizer(clip_cfg.tokenizer, clip_cfg.text_ctx).padded_tokens_and_mask(prompts)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] -> image space [0, 1]."""
    return ((x + 1) / 2).clamp(0, 1)


def load_pipeline(name: str, device: str | torch.device | None = None) -> DiffusionPipeline:
    """A pipeline over a shipped checkpoint (see `gm.pretrained.available()`); no network."""
    from . import pretrained

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = pretrained.load_model(name, device)
    if cfg.task != "diffusion":
        raise ValueError(f"{name!r} is a {cfg.task} checkpoint, not a diffusion model; pipelines: "
                         f"{', '.join(n for n in pretrained.available() if pretrained.entry(n).get('kind') == 'diffusion')}")
    if cfg.model.num_classes:
        classifier = f"{name}-classifier" if f"{name}-classifier" in pretrained.available() else None
        return ClassPipeline(model, cfg, device, classifier_name=classifier)
    if cfg.model.text_ctx:
        clip = f"{name}-clip" if f"{name}-clip" in pretrained.available() else None
        return TextPipeline(model, cfg, device, clip_name=clip)
    return DiffusionPipeline(model, cfg, device)
