"""The `glide-minimal` command: train | sample | info | bench | convert. Mirrors the Python API."""
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
    from .pipeline import ClassPipeline, TextPipeline, load_pipeline
    from .viz import image_grid

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.pipeline, args.device)
    common = dict(steps=args.steps, sampler=args.sampler, eta=args.eta, seed=args.seed, progress=not args.no_progress)
    if isinstance(pipe, TextPipeline):
        if args.prompt is None:
            raise ValueError(f"{args.pipeline} is text-conditional: pass --prompt, e.g. --prompt \"a large red circle in the center\"")
        prompt = args.prompt if len(args.prompt) > 1 else args.prompt[0]
        images = pipe(prompt, num_images=None if len(args.prompt) > 1 else args.num_images,
                      guidance_scale=args.guidance_scale, guidance=args.guidance, **common)
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


def memory_estimate(cfg, batch: int = 1) -> dict[str, float]:
    """Bytes for training in fp32 with AdamW + EMA, and activations per image (sum of layer outputs)."""
    from .models import build_model

    model = build_model(cfg, device="meta")
    params = sum(p.numel() for p in model.parameters())
    sizes = []
    hooks = [mod.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel() if torch.is_tensor(out) else 0))
             for mod in model.modules() if not list(mod.children())]
    from .models import example_inputs

    with torch.no_grad():
        x, t, kwargs = example_inputs(cfg, batch, device="meta")
        model(x, t, **kwargs)
    for h in hooks:
        h.remove()
    return {"parameters": params, "weights_bytes": 4 * params, "grads_bytes": 4 * params,
            "adam_bytes": 8 * params, "ema_bytes": 4 * params, "activation_bytes_per_image": 4 * sum(sizes) / batch}


def cmd_info(args) -> int:
    from .config import available_configs, load_config

    if args.list or not args.config:
        print("\n".join(available_configs()))
        return 0
    cfg = load_config(args.config, _overrides(args.set))
    est = memory_estimate(cfg)
    gib = lambda b: f"{b / 2**30:.3f} GiB"
    print(f"config      {cfg.name}: {cfg.description}")
    print(f"parameters  {est['parameters']:,}")
    print(f"weights     {gib(est['weights_bytes'])} (fp32)")
    print(f"training    {gib(est['weights_bytes'] + est['grads_bytes'] + est['adam_bytes'] + est['ema_bytes'])} "
          "(weights + grads + AdamW moments + EMA, fp32)")
    act = est["activation_bytes_per_image"] * cfg.train.batch_size
    print(f"activations {gib(act)} at batch {cfg.train.batch_size} (sum of layer outputs, fp32; an upper estimate)")
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_guidance, bench_sampler, bench_train

    if args.threads:
        torch.set_num_threads(args.threads)
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
    p.add_argument("--guidance", default="cfg", help="text guidance: cfg | clip | none")
    p.add_argument("--guidance-scale", type=float, default=3.0)
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

    p = sub.add_parser("info", help="parameters and memory of a config")
    p.add_argument("--config")
    p.add_argument("--list", action="store_true", help="list the config names")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", help="benchmarks: sampler overhead, training throughput, guidance cost")
    p.add_argument("what", choices=["sampler", "train", "guidance"])
    p.add_argument("--config", help="config (sampler, train; default tutorial-ddpm) or shipped pipeline (guidance; "
                                    "default tutorial-text)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("convert", help="released glide-text2im checkpoint(s) (.pt) -> safetensors + config JSON")
    p.add_argument("released", nargs="+", help="one released file (base.pt, upsample.pt, ...), or both noised CLIP "
                                               "files (clip_image_enc.pt clip_text_enc.pt) for one CLIP model")
    p.add_argument("--out", required=True, help="output .safetensors path (the config JSON goes next to it)")
    p.add_argument("--config", help="config name or path (default: the glide-filtered-* config of the file)")
    p.add_argument("--dtype", default="keep", choices=["keep", "fp32", "fp16", "bf16"])
    p.set_defaults(func=cmd_convert)

    args = parser.parse_args(argv)
    from .checkpoint import CheckpointError

    try:
        return args.func(args)
    except (KeyError, ValueError, FileExistsError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
