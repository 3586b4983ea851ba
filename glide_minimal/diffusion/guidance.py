"""Guidance: small wrappers that steer a sampler towards a condition.

- Classifier-free guidance (Ho & Salimans 2021; GLIDE Eq. 2): a model_fn wrapper. One batched forward
  evaluates the conditional and unconditional halves; eps is extrapolated,
  eps = eps_u + s (eps_c - eps_u), and the conditional half's variance is kept.
- Classifier guidance (Dhariwal & Nichol 2021): a cond_fn returning s * grad_x log p(y | x_t, t) of a
  noised classifier; the sampler adds it to the mean (ancestral) or the score (DDIM).
- CLIP guidance (GLIDE section 2.4): a cond_fn returning s * grad_x (e^tau f(x_t, t) . g(c)), the gradient
  of a noised CLIP's logit (its scaled cosine similarity) between the noised image and the caption.
- Inpainting (GLIDE section 4.3): a denoised_fn that puts the known pixels into every predicted x_0, for
  the inpainting models; and the replacement baseline for a plain model, a model_fn wrapper that shows
  the model the known region noised to the current step, q_sample(image, t): the training-free approach of
  earlier diffusion work, which GLIDE replaces by fine-tuning because the model never sees the whole
  context (RePaint, Lugmayr et al. 2022, adds resampling to it).
"""
from __future__ import annotations

from typing import Callable

import torch


def classifier_free_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """eps_u + s (eps_c - eps_u). torch.lerp returns eps_u exactly at s=0 and eps_c exactly at s=1."""
    return torch.lerp(eps_uncond, eps_cond, float(guidance_scale))


def classifier_free_model_fn(model_fn: Callable, guidance_scale: float, uncond_kwargs: dict,
                             eps_channels: int) -> Callable:
    """Wrap model_fn(x_t, t, **cond_kwargs) into a classifier-free guided one.

    uncond_kwargs: the unconditional input for the same N images (null labels, empty captions), merged
    with the call's kwargs as the second half of one [2N] batch. The output keeps the model's layout:
    guided eps in the first eps_channels, the conditional half's variance values after them.
    """
    def guided(x_t: torch.Tensor, t: torch.Tensor, **cond_kwargs) -> torch.Tensor:
        n = x_t.shape[0]
        both = {k: torch.cat([v, uncond_kwargs[k]]) if k in uncond_kwargs else torch.cat([v, v])
                for k, v in cond_kwargs.items()}
        out = model_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), **both)
        eps_cond, eps_uncond = out[:n, :eps_channels], out[n:, :eps_channels]
        return torch.cat([classifier_free_eps(eps_cond, eps_uncond, guidance_scale), out[:n, eps_channels:]], dim=1)

    return guided


def classifier_cond_fn(classifier: Callable, labels: torch.Tensor, guidance_scale: float) -> Callable:
    """cond_fn(x_t, t) = s * grad_x log p_phi(y | x_t, t) for a noised classifier (ADM Algorithms 1-2)."""
    def cond_fn(x_t: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            log_probs = classifier(x, t).float().log_softmax(dim=-1)
            selected = log_probs[torch.arange(len(labels), device=x.device), labels.to(x.device)]
            return guidance_scale * torch.autograd.grad(selected.sum(), x)[0]

    return cond_fn


def clip_cond_fn(clip: Callable, tokens: torch.Tensor, mask: torch.Tensor, guidance_scale: float) -> Callable:
    """cond_fn(x_t, t) = s * grad_x (e^tau f(x_t, t) . g(c)) for a noised CLIP (the mean shift of GLIDE
    section 2.4).

    clip: has embed_image(x_t, t) and embed_text(tokens, mask), both unit vectors [N, D], and
    similarity_scale() = e^tau, its learned logit scale. The gradient is of the CLIP's logit, not of the
    bare cosine, as in glide-text2im's CLIPModel.cond_fn: guidance_scale s then means what it means there
    (the released CLIP's e^tau is 100; a tutorial CLIP's is what its training learned). The caption
    embedding does not depend on x_t, so it is computed once.
    """
    with torch.no_grad():
        text_emb = clip.embed_text(tokens, mask) * clip.similarity_scale().float()

    def cond_fn(x_t: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            logits = (clip.embed_image(x, t) * text_emb.to(x.device)).sum()
            return guidance_scale * torch.autograd.grad(logits, x)[0]

    return cond_fn


def inpaint_denoised_fn(image: torch.Tensor, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """denoised_fn(pred_xstart) = image where mask = 1, pred_xstart where mask = 0.

    image [N, C, H, W] in model space [-1, 1]; mask [N, 1, H, W], 1 = keep. The sampler's posterior mean
    is computed from this x_0, so the known region is pulled towards the true pixels at every step and
    is exactly them at the last step (where the posterior mean is x_0 itself).
    """
    keep = mask > 0.5

    def denoised_fn(pred_xstart: torch.Tensor) -> torch.Tensor:
        # to the sampler's device: a mask from masks.py is made on the CPU
        return torch.where(keep.to(pred_xstart.device), image.to(pred_xstart.device, pred_xstart.dtype), pred_xstart)

    return denoised_fn


def replacement_model_fn(model_fn: Callable, diffusion, image: torch.Tensor, mask: torch.Tensor,
                         generator: torch.Generator | None = None) -> Callable:
    """The replacement baseline: before each model call, the known region of x_t becomes q_sample(image, t).

    model_fn is a plain (e.g. text-only, classifier-free guided) model that never saw a mask. At every step
    it is shown x_t whose known pixels are fresh samples of q(x_t | x_0 = image) (DDPM Eq. 4) and whose
    unknown pixels are the sampler's own. `diffusion` must be the full, unrespaced chain: the sampler
    calls model_fn with original timesteps. Every quantity of the update is per pixel, so replacing the
    model's input is the same as replacing the sampler's x_t: the unknown region evolves as in RePaint
    without resampling. The model learns nothing about the seam, which is why GLIDE fine-tunes instead.
    image [N, C, H, W] in [-1, 1], mask [N, 1, H, W] with 1 = keep.
    """
    keep = mask > 0.5

    def replaced(x_t: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        # to the sampler's device, like inpaint_denoised_fn's; q_sample draws on the generator's device
        known = diffusion.q_sample(image.to(x_t.device, x_t.dtype), t, generator=generator)
        return model_fn(torch.where(keep.to(x_t.device), known, x_t), t, **kwargs)

    return replaced
