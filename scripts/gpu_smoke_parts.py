"""The Python parts of scripts/gpu_smoke.sh, one subcommand each.

Every part runs inside its own try block: a failure prints its traceback and a `RESULT: FAILED ...` line
and exits 1, so the shell script records it and goes on with the next part. A part that works prints
`RESULT: <one line>` for the summary table.
Usage: python scripts/gpu_smoke_parts.py
    env | fwd-bwd CONFIG BATCH | forward-grid BATCH | forward-profile BATCH | cascade BATCH [--compile] | pipelines
    | text-pipelines
SMOKE_DEVICE=cpu runs fwd-bwd, the forward parts and text-pipelines on the CPU (with SMOKE_SCALE=tiny for the
forward parts: to check this script without a GPU).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
import traceback

import torch


def env() -> str:
    name = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__}, cuda {torch.version.cuda}, device {name}, bf16 {torch.cuda.is_bf16_supported()}")
    return f"{name}, torch {torch.__version__}, cuda {torch.version.cuda}"


def fwd_bwd(config: str, batch: str) -> str:
    """A released-size model's bf16 forward + backward at `batch` (random weights, channels_last)."""
    from glide_minimal.config import load_config
    from glide_minimal.models import build_model, example_inputs

    cfg, n, device = load_config(config), int(batch), torch.device(os.environ.get("SMOKE_DEVICE", "cuda"))
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).to(memory_format=torch.channels_last).train()
    x, _, kwargs = example_inputs(cfg, n, device)
    x, t = torch.randn_like(x), torch.randint(0, cfg.diffusion.num_timesteps, (n,), device=device)
    if "tokens" in kwargs:  # an 8-token caption per image
        vocab = model.text_encoder.token_embedding.num_embeddings
        kwargs["tokens"][:, :8] = torch.randint(1, vocab, (n, 8), device=device)
        kwargs["mask"][:, :8] = True
    if "low_res" in kwargs:
        kwargs["low_res"] = torch.randn_like(kwargs["low_res"])
    out_channels = cfg.model.out_channels * (2 if cfg.model.learn_sigma else 1)
    target = torch.randn(n, out_channels, *x.shape[2:], device=device)

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(x.contiguous(memory_format=torch.channels_last), t, **kwargs)
        (out.float() - target).square().mean().backward()

    step()  # warm-up: cuDNN picks its kernels
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    params = sum(p.numel() for p in model.parameters())
    print(f"{config}: {params:,} parameters; bf16 forward+backward at batch {n}: "
          f"median {statistics.median(times) * 1e3:.1f} ms (min {min(times) * 1e3:.1f}), peak memory {peak:.2f} GiB")
    return f"batch {n}: {statistics.median(times) * 1e3:.0f} ms fwd+bwd, peak {peak:.1f} GiB"


def cascade(batch: str, *flags: str) -> str:
    """The released-size cascade with CFG: the official 100 + 27 steps in fp32 and our fast settings."""
    from glide_minimal.bench import bench_released, format_released

    r = bench_released("full", int(batch), compile="--compile" in flags, device="cuda")
    print(format_released(r))
    official, fast = r["rows"]
    return (f"batch {batch}: official {official['image_s']:.2f} s/image, fast {fast['image_s']:.2f} s/image, "
            f"x{r['ratio']['image_s']:.1f}")


def released_stages(batch: str) -> list:
    """(model, args, kwargs) of the released-size base (CFG batch 2N) and upsampler (batch N), random weights, at
    t = 500 on $SMOKE_DEVICE (default cuda); SMOKE_SCALE=tiny gives the stand-ins (to check this script on a CPU)."""
    from glide_minimal.bench import released_configs
    from glide_minimal.models import build_model, example_inputs

    n, device = int(batch), torch.device(os.environ.get("SMOKE_DEVICE", "cuda"))
    stages = []
    for cfg, size in zip(released_configs(os.environ.get("SMOKE_SCALE", "full")), (2 * n, n)):
        torch.manual_seed(0)
        model = build_model(cfg).to(device).eval()
        x, t, kwargs = example_inputs(cfg, size, device)
        kwargs = {k: torch.randn_like(v) if k == "low_res" else v for k, v in kwargs.items()}
        stages.append((model, (torch.randn_like(x), torch.full_like(t, 500)), kwargs))
    return stages


def forward_grid(batch: str) -> str:
    """Which of the fast settings pays where: the released-size base and upsampler forwards in fp32 / bf16
    autocast x contiguous / channels_last, best of 5 after a warm-up, as speed.measure_fast_settings (what
    `bench released` uses) measures and picks them."""
    from glide_minimal.speed import fast_settings, measure_fast_settings

    stages = released_stages(batch)
    picked, times = measure_fast_settings(stages, fast_settings(next(stages[0][0].parameters()).device), 5)
    print(f"batch {batch} (base: CFG batch {2 * int(batch)}): one forward, ms")
    print(f"{'candidate':<22}{'base':>10}{'upsampler':>11}")
    for label, (base_s, up_s) in times.items():
        print(f"{label:<22}{base_s * 1e3:>10.1f}{up_s * 1e3:>11.1f}")
    per_stage = [min(times, key=lambda label: times[label][i]) for i in range(2)]
    return f"base fastest {per_stage[0]}, upsampler fastest {per_stage[1]}; picked {picked.precision} " + (
        "channels_last" if picked.channels_last else "contiguous")


# The per-operator times forward_profile sorts and sums by (attributes of torch's FunctionEventAvg; CUDA's is
# self_device_time_total, not the deprecated self_cuda_time_total, which the averaged events lack)
PROFILE_KEYS = {"cuda": "self_device_time_total", "cpu": "self_cpu_time_total"}


def forward_profile(batch: str) -> str:
    """Why a setting is slow: the top operators by device time of one released-size base forward (CFG batch 2N)
    in fp32 contiguous and in bf16 + channels_last (the pair measured at 0.64x on an H100 at batch 4)."""
    from torch.profiler import ProfilerActivity, profile

    from glide_minimal.speed import Settings, prepare

    model, args, kwargs = released_stages(batch)[0]
    cuda = args[0].device.type == "cuda"
    totals = {}
    for settings in (Settings("fp32 contiguous"), Settings("bf16 channels_last", torch.bfloat16, channels_last=True)):
        model.to(memory_format=torch.contiguous_format)
        fn = torch.no_grad()(prepare(model, settings))
        fn(*args, **kwargs)  # warm-up
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            fn(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize()
        key = PROFILE_KEYS["cuda" if cuda else "cpu"]
        print(f"=== {settings.name}, batch {2 * int(batch)}")
        print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=48))
        totals[settings.name] = sum(getattr(e, key) for e in prof.key_averages()) / 1e3
    return "; ".join(f"{name} {ms:.1f} ms of device time" for name, ms in totals.items())


def pipelines() -> str:
    """The shipped chapter 1-3 pipelines on the GPU: unconditional, CFG and classifier guidance."""
    import glide_minimal as gm

    ev = gm.load_evaluator(device="cuda")
    ddpm = gm.load_pipeline("tutorial-ddpm", device="cuda")
    start = time.perf_counter()
    images = ddpm(256, steps=100, seed=0)
    torch.cuda.synchronize()
    print(f"tutorial-ddpm: 256 images, 100 steps in {time.perf_counter() - start:.2f} s; "
          f"evaluator confidence {ev.quality(images, images)['confidence']:.3f}")
    digits = gm.load_pipeline("tutorial-digits", device="cuda")
    labels = torch.arange(10).repeat_interleave(20)
    accuracy = {}
    for method, scale in [("cfg", 3.0), ("classifier", 3.0)]:
        start = time.perf_counter()
        images = digits(labels, method=method, guidance_scale=scale, steps=50, seed=0)
        torch.cuda.synchronize()
        accuracy[method] = ev.accuracy(images, labels)
        print(f"tutorial-digits {method} scale {scale}: 200 images in {time.perf_counter() - start:.2f} s, "
              f"evaluator accuracy {accuracy[method]:.3f}")
    return f"digits accuracy: cfg {accuracy['cfg']:.3f}, classifier {accuracy['classifier']:.3f}"


def text_pipelines() -> str:
    """The shipped chapter 4-7 pipelines on the GPU: text -> 16 px, the cascade to 64 px, an inpainting edit."""
    import glide_minimal as gm
    from glide_minimal.shapesworld import region_mask, render_caption

    device = os.environ.get("SMOKE_DEVICE", "cuda")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    text = gm.load_pipeline("tutorial-text", device=device)
    prompts = ["a large red circle in the top left", "a small blue square in the center"] * 8
    start = time.perf_counter()
    big = text(prompts, guidance_scale=3.0, upsample=True, seed=0)
    sync()
    cascade_s = time.perf_counter() - start
    print(f"tutorial-text cascade: {len(prompts)} images {tuple(big.shape[1:])} in {cascade_s:.2f} s")
    inpaint = gm.load_pipeline("tutorial-inpaint", device=device)
    image = torch.stack([render_caption("a large green cross on the left", 64)] * 4).to(device)
    mask = region_mask("left", "large", 64).expand(4, 1, 64, 64).to(device)
    start = time.perf_counter()
    edited = inpaint("a large yellow triangle on the left", image=image, mask=mask, seed=0)
    sync()
    kept = (edited - image).abs().mul(mask).max().item()
    print(f"tutorial-inpaint: 4 edits in {time.perf_counter() - start:.2f} s; max change in the kept region {kept:.2e}")
    if kept > 1e-6:
        raise AssertionError(f"the kept region changed by {kept}")
    return f"cascade {len(prompts)} images {cascade_s:.1f} s; inpaint kept-region change {kept:.1e}"


PARTS = {"env": env, "fwd-bwd": fwd_bwd, "forward-grid": forward_grid, "forward-profile": forward_profile,
         "cascade": cascade, "pipelines": pipelines, "text-pipelines": text_pipelines}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in PARTS:
        sys.exit(f"usage: {sys.argv[0]} {' | '.join(PARTS)} [args]")
    try:
        print(f"RESULT: {PARTS[sys.argv[1]](*sys.argv[2:])}")
    except Exception as e:  # report and let the next part run
        traceback.print_exc()
        print(f"RESULT: FAILED {type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}")
        sys.exit(1)
