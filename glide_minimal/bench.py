"""Benchmarks (`glide-minimal bench ...`): timings reported as ratios measured in one run.

sampler: wall time of a sampling loop over the same number of bare model forwards (the sampler's
own overhead should be a few percent); train: training images per second of a config; guidance:
seconds per sample of a shipped text pipeline unguided, with classifier-free and with CLIP guidance.
"""
from __future__ import annotations

import tempfile
import time

import torch

from .config import load_config
from .diffusion import GaussianDiffusion, ddim_sample_loop, p_sample_loop
from .models import build_model, example_inputs


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def bench_sampler(config: str = "tutorial-ddpm", steps: int = 50, batch: int = 16, repeats: int = 3,
                  device: str | None = None) -> dict[str, float]:
    """Seconds for `steps` bare forwards vs the ancestral and DDIM loops over a `steps`-step chain."""
    cfg = load_config(config)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    diffusion = GaussianDiffusion.from_config(cfg.diffusion, str(steps))
    x, t, kwargs = example_inputs(cfg, batch, device)
    x, t, shape = torch.randn_like(x), t + 500, tuple(x.shape)

    def bare():
        for _ in range(steps):
            model(x, t, **kwargs)

    g = torch.Generator(device=device)
    ancestral = lambda: p_sample_loop(diffusion, model, shape, model_kwargs=kwargs, generator=g.manual_seed(0), device=device)
    ddim = lambda: ddim_sample_loop(diffusion, model, shape, model_kwargs=kwargs, generator=g.manual_seed(0), device=device)
    bare()  # warm-up
    res = {"bare_s": _best_of(bare, repeats), "ancestral_s": _best_of(ancestral, repeats), "ddim_s": _best_of(ddim, repeats)}
    res["ancestral_overhead"] = res["ancestral_s"] / res["bare_s"] - 1
    res["ddim_overhead"] = res["ddim_s"] / res["bare_s"] - 1
    return res


def bench_train(config: str = "tutorial-ddpm", steps: int = 20, device: str | None = None) -> dict[str, float]:
    """Training images/s over `steps` steps after two warm-up steps."""
    from .train import Trainer

    cfg = load_config(config)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, out, device=device, progress=False)
        for _ in range(2):
            trainer.train_step()
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        sync()
        wall = time.perf_counter() - start
    return {"images_per_s": steps * cfg.train.batch_size / wall, "s_per_step": wall / steps,
            "batch_size": cfg.train.batch_size}


def bench_guidance(pipeline: str = "tutorial-text", steps: int = 25, batch: int = 16, repeats: int = 3,
                   device: str | None = None) -> dict[str, float]:
    """Seconds per sample of a shipped text pipeline: unguided, classifier-free (scale 3), CLIP (scale 3)."""
    from .pipeline import load_pipeline

    pipe = load_pipeline(pipeline, device)
    prompts = ["a large red circle in the top left"] * batch
    res = {}
    for guidance in ("none", "cfg", "clip"):
        run = lambda: pipe(prompts, guidance=guidance, guidance_scale=3.0, steps=steps, seed=0)
        run()  # warm-up (and loads the CLIP)
        res[f"{guidance}_s_per_sample"] = _best_of(run, repeats) / batch
    return res
