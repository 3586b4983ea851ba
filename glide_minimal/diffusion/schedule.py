"""Noise schedules (betas) and timestep respacing.

`linear` is the schedule of Ho et al. (2020) rescaled so any T matches T=1000 (Nichol & Dhariwal 2021,
Sec. 3.2); `squaredcos_cap_v2` is their cosine schedule, Eq. (17), with beta capped at 0.999.
`space_timesteps` picks the subset of timesteps a respaced sampler visits (Nichol & Dhariwal 2021,
Sec. 4; DDIM's even striding; GLIDE's "fast27").
"""
from __future__ import annotations

import math

import numpy as np

SCHEDULES = ("linear", "squaredcos_cap_v2")


def betas_for_alpha_bar(num_timesteps: int, alpha_bar, max_beta: float = 0.999) -> np.ndarray:
    """betas such that prod(1 - beta) follows alpha_bar(t) for t in [0, 1]; beta_t = 1 - abar(t+1)/abar(t)."""
    t = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    abar = np.array([alpha_bar(s) for s in t], dtype=np.float64)
    return np.minimum(1.0 - abar[1:] / abar[:-1], max_beta)


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """betas [T] in float64 for a named schedule."""
    if name == "linear":
        scale = 1000.0 / num_timesteps  # keeps the total noise of a T=1000 chain for any T
        if scale * 0.02 >= 1.0:
            raise ValueError(f"the linear schedule needs num_timesteps > 20 (its last beta, 0.02 * 1000 / T = "
                             f"{scale * 0.02:g}, must stay below 1), got {num_timesteps}; use squaredcos_cap_v2")
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "squaredcos_cap_v2":
        # Nichol & Dhariwal (2021) Eq. (17), offset delta = 0.008 (the paper's s; here s is the guidance
        # scale) keeps beta_0 from vanishing.
        return betas_for_alpha_bar(num_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    raise ValueError(f"unknown noise schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")


def _sections(num_timesteps: int, counts: list[int]) -> list[int]:
    """Split [0, T) into len(counts) near-equal sections; take counts[i] evenly spaced steps from section i."""
    size, extra = divmod(num_timesteps, len(counts))
    steps, start = [], 0
    for i, count in enumerate(counts):
        length = size + (1 if i < extra else 0)
        if not 0 < count <= length:
            raise ValueError(f"cannot take {count} steps from a section of {length} timesteps "
                             f"(spec {counts}, T={num_timesteps})")
        stride = (length - 1) / (count - 1) if count > 1 else 1
        steps += [start + round(stride * k) for k in range(count)]
        start += length
    return steps


def space_timesteps(num_timesteps: int, spec: str | int | list[int]) -> list[int]:
    """The sorted timesteps (of the original chain) that a respaced chain keeps.

    spec: "100" (100 steps spread over [0, T)); "10,10,3,2,2" (per-section counts over equal sections);
    "ddim50" (DDIM's striding: every T/50-th step, starting at 0); "fast27" (GLIDE's upsampler
    schedule: sections 10,10,3,2,2 with the last step T-1 replaced by T-3 to avoid the noisiest one);
    "" or None: all T steps.
    """
    if spec in ("", None):
        return list(range(num_timesteps))
    if isinstance(spec, int):
        spec = str(spec)
    if isinstance(spec, (list, tuple)):
        return sorted(set(_sections(num_timesteps, list(spec))))
    spec = spec.strip()
    if spec == "fast27":
        steps = set(space_timesteps(num_timesteps, "10,10,3,2,2"))
        steps.remove(num_timesteps - 1)
        steps.add(num_timesteps - 3)
        return sorted(steps)
    if spec.startswith("ddim"):
        count = spec[len("ddim"):]
        if not count.isdigit() or not 0 < int(count) <= num_timesteps:
            raise ValueError(f"bad respacing {spec!r}: use ddimN with 1 <= N <= {num_timesteps}")
        for stride in range(1, num_timesteps + 1):
            if len(range(0, num_timesteps, stride)) == int(count):
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"cannot make exactly {count} evenly strided steps from T={num_timesteps}; try another count")
    try:
        counts = [int(c) for c in spec.split(",")]
    except ValueError:
        raise ValueError(
            f"bad respacing {spec!r}: use a step count like '100', sections like '10,10,3,2,2', 'ddim50' or 'fast27'"
        ) from None
    return sorted(set(_sections(num_timesteps, counts)))
