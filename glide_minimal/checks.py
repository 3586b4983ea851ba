"""Argument checks shared by every entry point (pipelines, CLI, benchmarks, configs), the default device,
and the seeded random streams. One rule each: NaN, inf and bools are not numbers, 1.7 is not a seed or a
label, and an error names the argument, the bad value and what is valid.

This module sits at the bottom of the package: it imports only torch and the standard library.
"""
from __future__ import annotations

import math
import numbers
import secrets

import torch

SAMPLERS = ("ancestral", "ddim", "dpm++2m")
GRADIENT_SAMPLERS = ("ancestral", "ddim")  # the ones that take gradient guidance (a cond_fn: CLIP, classifier)
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed's range
SEED_RULE = "a whole number in 0..2**64 - 1"
DEVICES = "cpu, cuda, cuda:N or mps"
STREAM_MULTIPLIER = 1_000_003  # stream_seed's default multiplier: a prime


def default_device() -> torch.device:
    """The device used when none is named: the first CUDA GPU if torch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


def check_sampler_settings(sampler: str, eta, gradient_guidance: bool = False, prefix: str = "") -> None:
    """What a sampler can do: eta is DDIM's noise (0 for the others, which are deterministic or fully
    stochastic); DPM-Solver++ is an ODE solver with no place for a guidance gradient."""
    if sampler != "ddim" and isinstance(eta, (int, float)) and eta != 0:
        raise ValueError(f"{prefix}eta={eta!r} is DDIM's noise; {prefix}sampler={sampler!r} takes no eta (leave it 0)")
    if gradient_guidance and sampler not in GRADIENT_SAMPLERS:
        raise ValueError(f"{prefix}sampler={sampler!r} cannot follow a guidance gradient (CLIP or classifier "
                         f"guidance); use one of: {', '.join(GRADIENT_SAMPLERS)}")


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


def stream_seed(seed: int, *streams: int, multipliers: tuple[int, ...] = (), bits: int = 64) -> int:
    """One seed from `seed` and the indices of a random stream, e.g. (seed, step) or (seed, step, example):
    h = seed, then h = h * multiplier + stream for each stream in turn, modulo 2**bits.

    multipliers: one per stream, default STREAM_MULTIPLIER (1_000_003, a prime) for each. With streams below
    the multiplier, different (seed, stream) pairs give different h before the modulus. The callers' choices of
    multipliers and bits are fixed forever: they decide every training batch and sample, so the shipped
    checkpoints replay only with them.
    """
    multipliers = multipliers or (STREAM_MULTIPLIER,) * len(streams)
    if len(multipliers) != len(streams):
        raise ValueError(f"stream_seed needs one multiplier per stream: {len(streams)} streams, "
                         f"{len(multipliers)} multipliers")
    h = seed
    for stream, multiplier in zip(streams, multipliers):
        h = h * multiplier + stream
    return h % 2**bits


def make_generator(seed: int | None, device: torch.device, stream: int = 0) -> torch.Generator:
    """The generator of `seed` (None: a fresh random one); stream > 0 gives independent generators for the
    same seed (e.g. the low-res augmentation noise, the replacement noise), so adding one never shifts
    another's draws."""
    base = check_seed(seed)
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(base, stream) if stream else base)  # stream 0 is the seed itself
    return g


