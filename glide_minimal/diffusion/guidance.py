"""Guidance: small wrappers that steer a sampler towards a condition.

- Classifier-free guidance (Ho & Salimans 2021; GLIDE Eq. 2): a model_fn wrapper. One batched forward
  evaluates the conditional and unconditional halves; eps is extrapolated,
  eps = eps_u + s (eps_c - eps_u), and the conditional half's variance is kept.
- Classifier guidance (Dhariwal & Nichol 2021): a cond_fn returning s * grad_x log p(y | x_t, t) of a
  noised classifier; the sampler adds it to the mean (ancestral) or the score (DDIM).
- CLIP guidance (GLIDE section 2.3): a cond_fn returning s * grad_x (f(x_t, t) . g(c)), the gradient of
  a noised CLIP's cosine similarity between the noised image and the caption.
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
    """cond_fn(x_t, t) = s * grad_x (f(x_t, t) . g(c)) for a noised CLIP (GLIDE Eq. 4's mean shift).

    clip: has embed_image(x_t, t) and embed_text(tokens, mask), both unit vectors [N, D]. The caption
    embedding does not depend on x_t, so it is computed once.
    """
    with torch.no_grad():
        text_emb = clip.embed_text(tokens, mask)

    def cond_fn(x_t: torch.Tensor, t: torch.Tensor, **_: object) -> torch.Tensor:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            similarity = (clip.embed_image(x, t) * text_emb.to(x.device)).sum()
            return guidance_scale * torch.autograd.grad(similarity, x)[0]

    return cond_fn
