"""Sample-quality measures: pure functions of feature tensors, images and masks.

On an independent evaluator's features and predictions (evaluators.py): the entropy of the
predicted-class histogram (mode coverage), the Frechet distance (Heusel et al. 2017), the kernel
distance (Binkowski et al. 2018), improved precision/recall (Kynkaanniemi et al. 2019) and the mean
pairwise distance (diversity); on inpainted images: the seam energy at the mask's edge (chapter 7).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from .captions import changed_captions_by_kind


def class_entropy(predicted: torch.Tensor, num_classes: int) -> float:
    """Entropy (bits) of the histogram of predicted classes [N] long in 0..num_classes-1: log2(num_classes)
    when every class is predicted equally often, 0 when one class takes them all (mode coverage)."""
    hist = torch.bincount(predicted.cpu(), minlength=num_classes).float()
    p = hist / hist.sum()
    return -(p[p > 0] * p[p > 0].log2()).sum().item()


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fit to two feature sets [N, D]."""
    a, b = feats_a.double().cpu().numpy(), feats_b.double().cpu().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def kernel_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Kernel inception distance (Binkowski et al. 2018): the unbiased squared MMD between two feature sets
    [N, D] under the cubic kernel k(x, y) = (x.y / D + 1)^3. Unlike the Frechet distance it has no bias at
    small N (it can dip slightly below 0 for two samples of one distribution)."""
    a, b = feats_a.double(), feats_b.double()
    kernel = lambda x, y: (x @ y.T / a.shape[1] + 1) ** 3
    k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
    m, n = len(a), len(b)
    within_a = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    within_b = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return (within_a + within_b - 2 * k_ab.mean()).item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls in feature space.

    precision: fraction of fake samples inside some real sample's k-NN ball (fidelity);
    recall: fraction of real samples inside some fake sample's k-NN ball (coverage / diversity).
    """
    def covered(support: torch.Tensor, queries: torch.Tensor) -> float:
        d_support = torch.cdist(support, support)
        radii = d_support.kthvalue(k + 1, dim=1).values  # k+1: the nearest is the point itself
        return (torch.cdist(queries, support) <= radii[None]).any(dim=1).float().mean().item()

    real, fake = real.float(), fake.float()
    return covered(real, fake), covered(fake, real)


def mean_pairwise_distance(feats: torch.Tensor) -> float:
    """Diversity: the mean distance between all pairs of samples in feature space."""
    d = torch.cdist(feats.float(), feats.float())
    n = len(feats)
    return (d.sum() / (n * (n - 1))).item()


def seam_energy(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Boundary coherence of an inpainted image (chapter 7): [N, C, H, W] images, [N, 1, H, W] masks -> [N].

    The mean squared color step (summed over channels) between neighbouring pixels that straddle the mask
    edge, one kept and one filled. A seam (filled content that does not continue the kept content) is a
    large step; compare with the same number for a real image of the scene, whose steps there are only
    the scene's own edges. Images whose mask has no edge (all keep or all fill) get NaN.
    """
    if (masks.ndim != 4 or masks.shape[1] != 1 or masks.shape[0] != images.shape[0]
            or masks.shape[2:] != images.shape[2:]):
        raise ValueError(f"masks must be [N, 1, H, W] matching images {tuple(images.shape)}, got {tuple(masks.shape)}")
    x, keep = images.float(), masks.float().to(images.device)  # a mask from masks.py is made on the CPU
    total = torch.zeros(len(x), device=x.device)  # on the images' device: the sums below add into it
    count = torch.zeros(len(x), device=x.device)
    for dim in (2, 3):
        step = x.diff(dim=dim).pow(2).sum(1, keepdim=True)  # [N, 1, ...]: squared step to the next pixel
        straddles = keep.diff(dim=dim).abs()  # 1 where the pair is one kept, one filled
        total += (step * straddles).flatten(1).sum(1)
        count += straddles.flatten(1).sum(1)
    return total / count.where(count > 0, torch.tensor(float("nan")))


@torch.no_grad()
def attribute_retrieval(clip, tokenizer, x_t: torch.Tensor, t: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """How well a (noised) CLIP reads each attribute: for each image x_t [N, C, H, W] at t [N] and its fully named
    ShapesWorld caption, whether the CLIP scores the caption above every caption that differs from it in that
    attribute alone (captions.changed_captions). {attribute: fraction of images}; chance is 1 / (number of
    values): 1/4 shape, 1/6 color, 1/2 size, 1/9 position. One-object captions name the position; two-object
    ones ("a small red circle and a large blue square") do not, and add "binding": the caption above each
    caption that swaps an attribute between its objects.
    """
    image_emb = clip.embed_image(x_t, t)
    wins: dict[str, list[bool]] = {}
    for emb, text in zip(image_emb, captions):
        rivals: dict[str, list[str]] = {}
        for kind, other in changed_captions_by_kind(text):
            rivals.setdefault(kind, []).append(other)
        tokens, mask = tokenizer.padded_tokens_and_mask([text] + sum(rivals.values(), []))
        scores = clip.embed_text(tokens.to(emb.device), mask.to(emb.device)) @ emb
        start = 1
        for kind, texts in rivals.items():
            wins.setdefault(kind, []).append(bool((scores[0] > scores[start:start + len(texts)]).all()))
            start += len(texts)
    return {kind: sum(w) / len(w) for kind, w in wins.items()}
