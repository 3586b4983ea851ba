"""The `glide-minimal` command: train | sample | info | bench | fetch | convert. Mirrors the Python API."""
from __future__ import annotations

import argparse
import json
import sys

import torch


def _overrides(items: list[str]) -> dict:
    from .config import parse_override

    return dict(parse_override(i) for i in items or [])


def cmd_train(args) -> int:
    from .config import load_config
    from .train import Trainer, TrainingDiverged

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, _overrides(args.set))
    out = args.out or f"runs/{cfg.name}"
    trainer = Trainer(cfg, out, device=args.device, resume=args.resume, progress=not args.no_progress)
    try:
        summary = trainer.run(args.max_steps)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    if trainer.rank == 0:
        print(json.dumps(summary))
    return 0


def cmd_sample(args) -> int:
    from .pipeline import ClassPipeline, InpaintPipeline, TextPipeline, UpsamplePipeline, load_pipeline
    from .viz import image_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.pipeline, args.device)
    common = dict(steps=args.steps, sampler=args.sampler, eta=args.eta, seed=args.seed, progress=not args.no_progress)
    if isinstance(pipe, (UpsamplePipeline, InpaintPipeline)):
        raise ValueError(f"{args.pipeline} takes images as well as prompts (an upsampler or an inpainting pipeline): use "
                         "the Python API, or sample a text pipeline with --upsample for the whole cascade")
    if args.upsample and not isinstance(pipe, TextPipeline):
        raise ValueError(f"--upsample runs a text pipeline's cascade; {args.pipeline} is not a text pipeline")
    if isinstance(pipe, TextPipeline):
        if args.prompt is None:
            raise ValueError(f"{args.pipeline} is text-conditional: pass --prompt, e.g. --prompt \"a large red circle in the center\"")
        prompt = args.prompt if len(args.prompt) > 1 else args.prompt[0]
        images = pipe(prompt, num_images=None if len(args.prompt) > 1 else args.num_images,
                      guidance_scale=args.guidance_scale, guidance=args.guidance, upsample=args.upsample, **common)
    elif isinstance(pipe, ClassPipeline):
        if not args.labels:
            raise ValueError(f"{args.pipeline} is class-conditional: pass --labels, e.g. --labels 3 3 7")
        images = pipe(args.labels, guidance_scale=args.guidance_scale, method=args.method, **common)
    else:
        if args.labels:
            raise ValueError(f"{args.pipeline} is unconditional: it takes --num-images, not --labels")
        images = pipe(args.num_images, **common)
    import matplotlib.pyplot as plt

    grid = image_grid(images, nrow=args.nrow)
    plt.imsave(args.out, grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
    print(f"wrote {args.out}: {len(images)} images of {tuple(images.shape[1:])}")
    return 0


def cmd_info(args) -> int:
    from .config import available_configs, load_config
    from .memory import format_report

    if args.list or not args.config:
        print("\n".join(available_configs()))
        return 0
    if args.gpus < 1:
        raise ValueError(f"--gpus {args.gpus} is not valid: give the number of GPUs, 1 or more")
    print(format_report(load_config(args.config, _overrides(args.set)), args.gpus))
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_guidance, bench_released, bench_sampler, bench_train, format_released

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "released":
        r = bench_released(args.scale, args.batch or 1, args.base_steps, args.fast_base_steps, args.upsample_steps,
                           args.fast_upsample_steps, args.compile, args.repeats, args.device)
        print(format_released(r))
        return 0
    args.batch = args.batch or 16
    if args.what in ("sampler", "train"):
        args.config = args.config or "tutorial-ddpm"
    if args.what == "sampler":
        r = bench_sampler(args.config, args.steps, args.batch, args.repeats, args.device)
        print(f"{'what':<24}{'seconds':>10}{'vs bare':>10}")
        print(f"{f'{args.steps} bare forwards':<24}{r['bare_s']:>10.3f}{'1.000':>10}")
        print(f"{'ancestral loop':<24}{r['ancestral_s']:>10.3f}{r['ancestral_s'] / r['bare_s']:>10.3f}")
        print(f"{'ddim loop':<24}{r['ddim_s']:>10.3f}{r['ddim_s'] / r['bare_s']:>10.3f}")
        print(f"sampler overhead: ancestral {100 * r['ancestral_overhead']:.1f} %, ddim {100 * r['ddim_overhead']:.1f} % "
              f"(config {args.config}, batch {args.batch}, best of {args.repeats})")
    elif args.what == "guidance":
        pipeline = args.config or "tutorial-text"
        r = bench_guidance(pipeline, args.steps, args.batch, args.repeats, args.device)
        none = r["none_s_per_sample"]
        print(f"{'guidance':<12}{'s/sample':>10}{'vs none':>10}")
        for k in ("none", "cfg", "clip"):
            print(f"{k:<12}{r[f'{k}_s_per_sample']:>10.4f}{r[f'{k}_s_per_sample'] / none:>10.2f}")
        print(f"(pipeline {pipeline}, {args.steps} steps, batch {args.batch}, best of {args.repeats})")
    else:
        r = bench_train(args.config, args.steps, args.device)
        print(f"train {args.config}: {r['images_per_s']:.1f} images/s ({r['s_per_step']:.3f} s/step at batch {r['batch_size']})")
    return 0


def cmd_fetch(args) -> int:
    from .fetch import fetch, sha256_file

    out = fetch(args.url, args.out, args.sha256, progress=not args.no_progress, retries=args.retries)
    print(f"{out}: sha256 {sha256_file(out)} verified")
    return 0


def cmd_convert(args) -> int:
    from .convert import convert

    out = convert(args.released, args.out, args.config, args.dtype)
    print(f"wrote {out} and {out.with_suffix('.json')}: load with gm.load_pipeline({str(out)!r}) "
          "or gm.pretrained.load_model")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glide-minimal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a config (runs unchanged under torchrun)")
    p.add_argument("--config", required=True, help="config name (see `glide-minimal info --list`) or a .yaml path")
    p.add_argument("--out", help="output folder for checkpoint, config and log (default runs/<config>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--max-steps", type=int, help="stop at this step (default: the config's train.max_steps)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.lr=1e-4")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample a grid of images from a shipped pipeline")
    p.add_argument("--pipeline", required=True, help="a shipped checkpoint name, e.g. tutorial-ddpm")
    p.add_argument("--num-images", type=int, default=16,
                   help="unconditional pipelines, or images of one --prompt: how many images")
    p.add_argument("--labels", type=int, nargs="+", help="class-conditional pipelines: one label per image")
    p.add_argument("--prompt", nargs="+", help="text pipelines: a caption (several: one image each); \"\" = unconditional")
    p.add_argument("--guidance", default="cfg", help="text guidance: cfg | clip | clip-unconditional | none")
    p.add_argument("--guidance-scale", type=float, default=3.0)
    p.add_argument("--upsample", action="store_true",
                   help="text pipelines: run the cascade, the base model then its -upsample checkpoint (fast27)")
    p.add_argument("--method", default="cfg", help="class guidance: cfg | classifier | none")
    p.add_argument("--steps", default=None, help="sampling steps or a respacing spec (100, ddim50, fast27)")
    p.add_argument("--sampler", default="ancestral", choices=["ancestral", "ddim"])
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nrow", type=int, default=8)
    p.add_argument("--out", default="samples.png")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("info", help="parameters, and training memory per GPU for DDP and FSDP")
    p.add_argument("--config")
    p.add_argument("--list", action="store_true", help="list the config names")
    p.add_argument("--gpus", type=int, default=1, help="GPUs the global batch (and, with FSDP, the model) is split over")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", help="benchmarks: sampler overhead, training throughput, guidance cost, the "
                                     "released-size cascade (official settings vs ours)")
    p.add_argument("what", choices=["sampler", "train", "guidance", "released"])
    p.add_argument("--config", help="config (sampler, train; default tutorial-ddpm) or shipped pipeline (guidance; "
                                    "default tutorial-text)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, help="images (default 16; released: 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scale", default="full", choices=["full", "tiny"],
                   help="released: the released-size models, or tiny stand-ins (for tests)")
    p.add_argument("--base-steps", default="100", help="released: the official base steps (ancestral)")
    p.add_argument("--fast-base-steps", default="ddim25", help="released: our base steps (ddimN: DDIM)")
    p.add_argument("--upsample-steps", default="fast27", help="released: the official upsampler steps (ancestral)")
    p.add_argument("--fast-upsample-steps", default="ddim10", help="released: our upsampler steps (ddimN: DDIM)")
    p.add_argument("--compile", action="store_true", help="released: torch.compile the models in the fast setting")
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("fetch", help="download a file (released checkpoints) with resume and a sha256 check")
    p.add_argument("url")
    p.add_argument("--sha256", required=True, help="the file's expected sha256 (64 hex characters)")
    p.add_argument("--out", required=True, help="where to put it; the partial download is OUT.part until verified")
    p.add_argument("--retries", type=int, default=3, help="resume a dropped transfer this many times")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("convert", help="released glide-text2im checkpoint(s) (.pt) -> safetensors + config JSON")
    p.add_argument("released", nargs="+", help="one released file (base.pt, upsample.pt, ...), or both noised CLIP "
                                               "files (clip_image_enc.pt clip_text_enc.pt) for one CLIP model")
    p.add_argument("--out", required=True, help="output .safetensors path (the config JSON goes next to it)")
    p.add_argument("--config", help="config name or path (default: the glide-filtered-* config of the file)")
    p.add_argument("--dtype", default="keep", choices=["keep", "fp32", "fp16", "bf16"])
    p.set_defaults(func=cmd_convert)

    args = parser.parse_args(argv)
    from .checkpoint import CheckpointError
    from .fetch import DownloadError

    try:
        return args.func(args)
    except (KeyError, ValueError, FileExistsError, FileNotFoundError, CheckpointError, DownloadError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
