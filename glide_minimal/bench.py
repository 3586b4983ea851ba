"""Benchmarks (`glide-minimal bench ...`): timings reported as ratios measured in one run.

sampler: wall time of a sampling loop over the same number of bare model forwards (the sampler's
own overhead should be a few percent); train: training images per second of a config; guidance:
seconds per sample of a shipped text pipeline unguided, with classifier-free and with CLIP guidance;
released: the released-size cascade (random weights) under the official recipe's settings and ours;
loader: images per second of a folder or shard config's input pipeline alone (decode, resize, tokenize), with
0, 1, ... DataLoader workers, beside the training step's own images per second: the loader must keep up.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from .checks import check_count, check_device, check_finite_range, default_device
from .config import Config, load_config
from .diffusion import GaussianDiffusion, ddim_sample_loop, p_sample_loop
from .imagetext import STREAMED, StreamingData, training_captions
from .models import WordTokenizer, build_model, example_inputs
from .models.learned_bpe import learn_bpe
from .pipelines import TextPipeline, UpsamplePipeline, load_pipeline
from .speed import (
    FAST_BASE_STEPS,
    FAST_SAMPLER,
    FAST_UPSAMPLE_STEPS,
    RELEASE_UPSAMPLE_STEPS,
    best_of,
    fast_settings,
    measure_fast_settings,
    official_settings,
)
from .train import Trainer

# The caption the released-size cascade is timed on. The models have random weights and the released
# BPE files are not shipped, so a word tokenizer over the caption's own words stands in: 8 tokens.
BENCH_PROMPT = "an oil painting of a corgi on skis"


def bench_device(device: str | None) -> torch.device:
    """The device to time on: `device` (checked), or cuda if available."""
    return check_device(device) if device is not None else default_device()


@torch.no_grad()
def bench_sampler(config: str = "tutorial-ddpm", steps: int = 50, batch: int = 16, repeats: int = 3,
                  device: str | None = None) -> dict[str, float]:
    """Seconds for `steps` bare forwards vs the ancestral and DDIM loops over a `steps`-step chain."""
    steps, batch, repeats = check_count("steps", steps), check_count("batch", batch), check_count("repeats", repeats)
    device = bench_device(device)
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    diffusion = GaussianDiffusion.from_config(cfg.diffusion, str(steps))
    x, t, kwargs = example_inputs(cfg, batch, device)
    x, t, shape = torch.randn_like(x), t + 500, tuple(x.shape)

    def bare():
        for _ in range(steps):
            model(x, t, **kwargs)

    g = torch.Generator(device=device)
    common = dict(model_kwargs=kwargs, device=device)
    ancestral = lambda: p_sample_loop(diffusion, model, shape, generator=g.manual_seed(0), **common)
    ddim = lambda: ddim_sample_loop(diffusion, model, shape, generator=g.manual_seed(0), **common)
    bare()  # warm-up
    res = {"bare_s": best_of(bare, repeats), "ancestral_s": best_of(ancestral, repeats),
           "ddim_s": best_of(ddim, repeats)}
    res["ancestral_overhead"] = res["ancestral_s"] / res["bare_s"] - 1
    res["ddim_overhead"] = res["ddim_s"] / res["bare_s"] - 1
    return res


def bench_train(config: str = "tutorial-ddpm", steps: int = 20, device: str | None = None,
                overrides: dict | None = None) -> dict[str, float]:
    """Training images/s over `steps` steps after two warm-up steps."""
    steps = check_count("steps", steps)
    if device is not None:
        check_device(device)
    cfg = load_config(config, overrides)
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


def bench_loader(config: str = "tutorial-emoji", steps: int = 20, workers: tuple[int, ...] = (0, 1, 2),
                 overrides: dict | None = None) -> dict[int, float]:
    """{workers: images/s} of the config's streamed input pipeline alone (imagetext.StreamingData: decode,
    convert, crop and resize, tokenize, the step's draws), over `steps` batches after the first (which starts
    the workers)."""
    steps = check_count("steps", steps)
    results = {}
    for w in workers:
        cfg = load_config(config, {**(overrides or {}), "data.num_workers": w})
        if cfg.data.dataset not in STREAMED:
            raise ValueError(f"bench loader needs a folder or webdataset config; {config!r} has data.dataset "
                             f"{cfg.data.dataset!r} (set data.dataset and data.path)")
        with tempfile.TemporaryDirectory() as out:
            cfg.model.tokenizer_file = prepared_tokenizer(cfg, out)
            stream = StreamingData(cfg, 0, 1, torch.device("cpu"))
            diffusion = GaussianDiffusion.from_config(cfg.diffusion)
            stream.batch(0, diffusion)
            start = time.perf_counter()
            for step in range(1, steps + 1):
                stream.batch(step, diffusion)
            results[w] = steps * cfg.train.batch_size / (time.perf_counter() - start)
            stream.loader = None  # shuts the workers down
    return results


def prepared_tokenizer(cfg: Config, folder: str) -> str:
    """The tokenizer_file a bench run of cfg uses: cfg's own, or for a bpe config without one a BPE learned
    into `folder` as training would learn it ("" for other tokenizers)."""
    m = cfg.model
    if m.tokenizer != "bpe" or m.tokenizer_file:
        return m.tokenizer_file
    path = Path(folder) / "tokenizer.json"
    learn_bpe(training_captions(cfg), m.text_vocab_size, m.text_ctx).save(path)
    return str(path)


def bench_guidance(pipeline: str = "tutorial-text", steps: int = 25, batch: int = 16, repeats: int = 3,
                   device: str | None = None) -> dict[str, float]:
    """Seconds per sample of a shipped text pipeline: unguided, classifier-free (scale 3), CLIP (scale 3)."""
    steps, batch, repeats = check_count("steps", steps), check_count("batch", batch), check_count("repeats", repeats)
    pipe = load_pipeline(pipeline, device)
    prompts = ["a large red circle in the top left"] * batch
    res = {}
    for guidance in ("none", "cfg", "clip"):
        run = lambda: pipe(prompts, guidance=guidance, guidance_scale=3.0, steps=steps, seed=0)
        run()  # warm-up (and loads the CLIP)
        res[f"{guidance}_s_per_sample"] = best_of(run, repeats) / batch
    return res


# --scale tiny: the released configs shrunk (16 px base, 64 px upsampler, narrow nets, one text layer) with
# their structure kept (text conditioning, learned sigma, super-res input), so that a test runs in seconds.
TINY_RELEASED = {"model.model_channels": 32, "model.channel_mult": [1, 2], "model.num_res_blocks": 1,
                 "model.num_head_channels": 16, "model.text_ctx": 16, "model.text_width": 64, "model.text_layers": 1,
                 "model.text_heads": 2, "model.text_vocab_size": 512}
TINY_SIZES = {"glide-filtered-base": (16, [8]), "glide-filtered-upsample": (64, [32])}


def released_configs(scale: str = "full") -> tuple[Config, Config]:
    """(base config, upsampler config) of the released GLIDE (filtered), or their tiny stand-ins."""
    if scale not in ("full", "tiny"):
        raise ValueError(f"scale {scale!r} is not valid; choose one of: full, tiny")
    configs = []
    for name, (size, attention) in TINY_SIZES.items():
        tiny = {**TINY_RELEASED, "model.image_size": size, "data.image_size": size,
                "model.attention_resolutions": attention}
        configs.append(load_config(name, tiny if scale == "tiny" else None))
    return tuple(configs)


def stand_in_cascade(base_cfg: Config, up_cfg: Config, device: torch.device) -> TextPipeline:
    """The released-size cascade (random weights, seed 0) as the pipelines users run: a TextPipeline whose
    upsample=True drives the UpsamplePipeline, both tokenizing BENCH_PROMPT with a stand-in word tokenizer."""
    torch.manual_seed(0)
    base, upsampler = (build_model(c).to(device).eval() for c in (base_cfg, up_cfg))
    words = BENCH_PROMPT.split()
    up = UpsamplePipeline(upsampler, up_cfg, device, tokenizer=WordTokenizer(words, up_cfg.model.text_ctx))
    return TextPipeline(base, base_cfg, device, upsampler=up, tokenizer=WordTokenizer(words, base_cfg.model.text_ctx))


def bench_released(scale: str = "full", batch: int = 1, base_steps: str = "100",
                   fast_base_steps: str = FAST_BASE_STEPS, upsample_steps: str = RELEASE_UPSAMPLE_STEPS,
                   fast_upsample_steps: str = FAST_UPSAMPLE_STEPS, compile: bool = False, repeats: int = 3,
                   device: str | None = None, guidance_scale: float = 3.0, fast_sampler: str = FAST_SAMPLER,
                   measure: bool = True) -> dict:
    """Time the cascade (TextPipeline(upsample=True), what users run) under the official settings and ours,
    on the same random-init models.

    measure: our precision and layout are those measured fastest here at this batch
    (speed.measure_fast_settings); False: speed.fast_settings as they are (bf16 where native, channels_last).
    Returns {"device", "batch", "configs": [(name, parameters)] x2, "rows": [official, fast], "ratio",
    "measured": {candidate: [base, upsampler forward seconds]} ({} unless measure)}; each row has
    base_forward_s (one CFG forward, batch 2N), upsample_forward_s (batch N) and image_s (the whole cascade / N).
    ratio: official / fast for each of the three.
    """
    batch, repeats = check_count("batch", batch), check_count("repeats", repeats)
    check_finite_range("guidance_scale", guidance_scale, 0)
    device = bench_device(device)
    base_cfg, up_cfg = released_configs(scale)
    pipe = stand_in_cascade(base_cfg, up_cfg, device)
    up = pipe.upsampler
    prompts = [BENCH_PROMPT] * batch
    g = torch.Generator().manual_seed(1)
    s, s_up = base_cfg.model.image_size, up_cfg.model.image_size
    x_base = torch.randn(2 * batch, 3, s, s, generator=g).to(device)  # the CFG pair, as one batch
    x_up = torch.randn(batch, 3, s_up, s_up, generator=g).to(device)
    low_res = torch.randn(batch, 3, s, s, generator=g).to(device)
    t_base, t_up = torch.full((2 * batch,), 500, device=device), torch.full((batch,), 500, device=device)
    both = pipe.tokens(prompts + [""] * batch)
    cond = up.tokens(prompts)
    fast = fast_settings(device, fast_base_steps, fast_upsample_steps, compile, fast_sampler)
    measured = {}
    if measure:
        stages = [(pipe.model, (x_base, t_base), both), (up.model, (x_up, t_up), {**cond, "low_res": low_res})]
        fast, measured = measure_fast_settings(stages, fast, repeats)
    rows = []
    for settings in (official_settings(base_steps, upsample_steps), fast):
        pipe.optimize(settings), up.optimize(settings)
        base_forward = torch.no_grad()(lambda: pipe.model_fn(x_base, t_base, **both))
        up_forward = torch.no_grad()(lambda: up.model_fn(x_up, t_up, **cond, low_res=low_res))
        base_forward(), up_forward()  # warm-up (and, with compile, compilation)
        run = lambda: pipe(prompts, guidance_scale=guidance_scale, steps=settings.base_steps,  # noqa: E731
                           sampler=settings.base_sampler, upsample=True, upsample_steps=settings.upsample_steps,
                           upsample_sampler=settings.upsample_sampler, seed=0)
        rows.append({"setting": settings.name, "precision": settings.precision,
                     "layout": "channels_last" if settings.channels_last else "contiguous", "compile": settings.compile,
                     "base_steps": f"{settings.base_steps} {settings.base_sampler}",
                     "upsample_steps": f"{settings.upsample_steps} {settings.upsample_sampler}",
                     "base_forward_s": best_of(base_forward, repeats),
                     "upsample_forward_s": best_of(up_forward, repeats),
                     "image_s": best_of(run, 1) / batch})
    official, fast = rows
    ratio = {k: official[k] / fast[k] for k in ("base_forward_s", "upsample_forward_s", "image_s")}
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"device": str(device), "batch": batch, "scale": scale, "guidance_scale": guidance_scale,
            "configs": [(base_cfg.name, count(pipe.model)), (up_cfg.name, count(up.model))], "rows": rows,
            "ratio": ratio, "measured": measured}


def format_released(r: dict) -> str:
    """The table `glide-minimal bench released` prints."""
    (base, n_base), (up, n_up) = r["configs"]
    lines = [f"{'released-size' if r['scale'] == 'full' else 'TINY stand-ins for the released'} cascade, random "
             f"weights: {base} ({n_base:,} parameters) + {up} ({n_up:,}); {r['device']}, batch {r['batch']}, "
             f"CFG scale {r['guidance_scale']:g} as one batched forward of 2 x {r['batch']}",
             f"{'setting':<10}{'precision':<11}{'layout':<15}{'compile':<9}{'base steps':<16}{'upsample steps':<18}"
             f"{'base fwd s':>11}{'up fwd s':>10}{'s/image':>10}"]
    for row in r["rows"]:
        compiled = "yes" if row["compile"] else "no"
        lines.append(f"{row['setting']:<10}{row['precision']:<11}{row['layout']:<15}{compiled:<9}"
                     f"{row['base_steps']:<16}{row['upsample_steps']:<18}{row['base_forward_s']:>11.4f}"
                     f"{row['upsample_forward_s']:>10.4f}{row['image_s']:>10.3f}")
    q = r["ratio"]
    lines.append(f"{'official / fast (speed-up)':<79}{q['base_forward_s']:>11.2f}{q['upsample_forward_s']:>10.2f}"
                 f"{q['image_s']:>10.2f}")
    if r["measured"]:
        lines.append("our precision and layout, measured here (one forward, base + upsampler, seconds):")
        fastest = min(r["measured"], key=lambda label: sum(r["measured"][label]))
        for label, (base_s, up_s) in r["measured"].items():
            picked = "  <- fastest, used above" if label == fastest else ""
            lines.append(f"  {label:<22}{base_s:>10.4f} + {up_s:.4f}{picked}")
    if r["rows"][1]["precision"] == "fp32" and not r["measured"]:
        lines.append("(no native bf16 on this device: the fast settings stay in fp32 here)")
    return "\n".join(lines)
