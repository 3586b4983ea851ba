"""Class-conditional sampling with classifier-free or classifier guidance (chapters 2-3)."""
from __future__ import annotations

import numpy as np
import torch

from ..checks import check_finite_range, check_sampler_settings, is_whole
from ..config import Config
from ..diffusion.guidance import classifier_cond_fn, classifier_free_model_fn
from .base import Companion, DiffusionPipeline, to_unit


class ClassPipeline(DiffusionPipeline):
    """Class-conditional sampling with classifier-free or classifier guidance (chapters 2-3).

        pipe = gm.load_pipeline("tutorial-digits")
        images = pipe(labels=[3, 3, 7], guidance_scale=3.0, method="cfg", seed=0)

    method="cfg": one model trained with 20 % null labels; eps = eps_u + s (eps_c - eps_u).
    method="classifier": the model's unconditional branch (null label) steered by s * grad log p(y | x_t)
    of the noised classifier. guidance_scale 0 gives the unconditional model in both cases.
    classifier: the noised classifier (a model, or a Companion that loads it on first use).
    """

    METHODS = ("cfg", "classifier", "none")

    def __init__(self, model: torch.nn.Module, cfg: Config, device: str | torch.device = "cpu",
                 classifier: torch.nn.Module | Companion | None = None):
        super().__init__(model, cfg, device)
        self._classifier = Companion.of(classifier, "method='classifier' needs a noised classifier; none is "
                                                    "registered for this pipeline (pass classifier=)")

    @property
    def classifier(self) -> torch.nn.Module:
        return self._classifier.get()

    def check_labels(self, labels) -> torch.Tensor:
        """labels: one whole number (a class index) or a list, tuple, range or integer tensor/array of them;
        floats (3.7 is not class 3) and bools are refused. Returns [N] long on the device."""
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
        if method not in self.METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of: {', '.join(self.METHODS)}")
        guidance_scale = check_finite_range("guidance_scale", guidance_scale, 0)
        seed = self.check_sampling(steps, sampler, eta, seed)
        check_sampler_settings(sampler, eta, gradient_guidance=method == "classifier")
        labels = self.check_labels(labels)
        null = torch.full_like(labels, self.cfg.model.num_classes)
        kwargs, model_fn, cond_fn = {"labels": labels}, None, None
        if method == "cfg":
            model_fn = classifier_free_model_fn(self.model_fn, guidance_scale, {"labels": null},
                                                self.cfg.model.out_channels)
        elif method == "classifier":
            kwargs, cond_fn = {"labels": null}, classifier_cond_fn(self.classifier, labels, guidance_scale)
        out = self.sample(len(labels), steps=steps, sampler=sampler, eta=eta, seed=seed, model_kwargs=kwargs,
                          cond_fn=cond_fn, model_fn=model_fn, progress=progress, return_trajectory=return_trajectory)
        if return_trajectory:
            return to_unit(out[0]), out[1]
        return to_unit(out)
