"""The `glide-minimal` command: train | sample | info | bench | fetch | convert. Mirrors the Python API."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import matplotlib.pyplot as plt
import torch
import yaml
from PIL import features

from .bench import bench_guidance, bench_loader, bench_released, bench_sampler, bench_train, format_released
from .checkpoint import CheckpointError
from .checks import SAMPLERS, SEED_MAX, SEED_RULE, check_device, finite_range_rule
from .config import available_configs, load_config, parse_override
from .convert import DTYPES, convert
from .fetch import DownloadError, fetch, sha256_file
from .memory import format_report
from .pipelines import ClassPipeline, InpaintPipeline, TextPipeline, UpsamplePipeline, load_pipeline
from .speed import FAST_BASE_STEPS, FAST_SAMPLER, FAST_UPSAMPLE_STEPS, RELEASE_UPSAMPLE_STEPS
from .train import Trainer, TrainingDiverged
from .viz import image_grid

# --out of `sample`: extension -> the format matplotlib's imsave writes (PIL for the bitmaps).
IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".gif": "gif",
                 ".webp": "webp", ".pdf": "pdf", ".svg": "svg", ".eps": "eps", ".ps": "ps"}


def _webp_available() -> bool:
    try:
        return bool(features.check("webp"))
    except Exception:  # noqa: BLE001 - an old or odd PIL: leave webp out
        return False


if not _webp_available():
    del IMAGE_FORMATS[".webp"]


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr: `glide-minimal sample: error: argument --nrow: ...`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- argparse types: each checks one flag before any work, with the rule the Python API uses -----------------------
def whole_number(minimum: int):
    """A type for a whole-number flag >= minimum (counts: 1; labels, retries: 0)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return value
    return parse


def finite_number(lo: float | None = None, hi: float | None = None):
    """A type for a float flag: finite (no nan, no inf) and in [lo, hi]."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None  # not a number: finite_range_rule says what it must be
        rule = finite_range_rule(value, lo, hi)
        if rule:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value
    return parse


def seed_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be {SEED_RULE}, got {text!r}")
    return value


def device_name(text: str) -> str:
    try:
        check_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def image_path(text: str) -> str:
    """--out of `sample`: an image file that can be written, checked before the models load."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give an image file name, e.g. {path / 'samples.png'}")
    ext = path.suffix.lower()
    if ext not in IMAGE_FORMATS:
        what = f"unknown image extension {path.suffix!r}" if ext else "no image extension"
        raise argparse.ArgumentTypeError(f"{path.name}: {what}; use one of {', '.join(IMAGE_FORMATS)}")
    folder = path.parent
    if not folder.exists():
        raise argparse.ArgumentTypeError(f"the folder {folder} does not exist (create it first)")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write to the folder {folder}")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{path} exists and is not writable")
    return text


def save_grid(path: str, grid) -> None:
    plt.imsave(path, grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1,
               format=IMAGE_FORMATS[Path(path).suffix.lower()])


def error_message(e: BaseException) -> str:
    """An expected error as one line: a KeyError's message unquoted, an OSError's reason and file."""
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    elif isinstance(e, OSError) and e.strerror:
        files = [str(f) for f in (e.filename, e.filename2) if f is not None]
        text = f"{e.strerror}: {' -> '.join(files)}" if files else e.strerror
    else:
        text = str(e) or type(e).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _overrides(items: list[str]) -> dict:
    return dict(parse_override(i) for i in items or [])


def cmd_train(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, _overrides(args.set))
    out = args.out or f"runs/{cfg.name}"
    trainer = Trainer(cfg, out, device=args.device, resume=args.resume, progress=not args.no_progress)
    try:
        summary = trainer.run(args.max_steps)
    except TrainingDiverged as e:
        print(f"glide-minimal: error: {error_message(e)}", file=sys.stderr)
        return 3
    if trainer.rank == 0:
        print(json.dumps(summary))
    return 0


def cmd_sample(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.pipeline, args.device)
    if isinstance(pipe, (UpsamplePipeline, InpaintPipeline)):
        raise ValueError(f"{args.pipeline} takes images as well as prompts (an upsampler or an inpainting pipeline): "
                         "use the Python API, or sample a text pipeline with --upsample for the whole cascade")
    if args.upsample and not isinstance(pipe, TextPipeline):
        raise ValueError(f"--upsample runs a text pipeline's cascade; {args.pipeline} is not a text pipeline")
    images = _sample(pipe, args)
    save_grid(args.out, image_grid(images, nrow=args.nrow))
    print(f"wrote {args.out}: {len(images)} images of {tuple(images.shape[1:])}")
    return 0


def _sample(pipe, args) -> torch.Tensor:
    """Images [N, C, H, W] in [0, 1] of a text, class-conditional or unconditional pipeline, with the flags it takes."""
    common = dict(steps=args.steps, sampler=args.sampler, eta=args.eta, seed=args.seed, progress=not args.no_progress)
    if isinstance(pipe, TextPipeline):
        if args.prompt is None:
            raise ValueError(f"{args.pipeline} is text-conditional: pass --prompt, e.g. --prompt "
                             "\"a large red circle in the center\"")
        prompt = args.prompt if len(args.prompt) > 1 else args.prompt[0]
        return pipe(prompt, num_images=None if len(args.prompt) > 1 else args.num_images,
                    guidance_scale=args.guidance_scale, guidance=args.guidance, upsample=args.upsample, **common)
    if isinstance(pipe, ClassPipeline):
        if not args.labels:
            raise ValueError(f"{args.pipeline} is class-conditional: pass --labels, e.g. --labels 3 3 7")
        return pipe(args.labels, guidance_scale=args.guidance_scale, method=args.method, **common)
    if args.labels:
        raise ValueError(f"{args.pipeline} is unconditional: it takes --num-images, not --labels")
    return pipe(args.num_images, **common)


def cmd_info(args) -> int:
    if args.list or not args.config:
        print("\n".join(available_configs()))
        return 0
    if args.gpus < 1:
        raise ValueError(f"--gpus {args.gpus} is not valid: give the number of GPUs, 1 or more")
    print(format_report(load_config(args.config, _overrides(args.set)), args.gpus))
    return 0


def cmd_bench(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "released":
        r = bench_released(args.scale, args.batch or 1, args.base_steps, args.fast_base_steps, args.upsample_steps,
                           args.fast_upsample_steps, args.compile, args.repeats, args.device,
                           fast_sampler=args.fast_sampler, measure=not args.no_measure)
        print(format_released(r))
        return 0
    args.batch = args.batch or 16
    if args.what in ("sampler", "train"):
        args.config = args.config or "tutorial-ddpm"
    if args.what == "loader":
        args.config = args.config or "tutorial-emoji"
    runs = {"sampler": _bench_sampler, "guidance": _bench_guidance, "train": _bench_train, "loader": _bench_loader}
    runs[args.what](args)
    return 0


def _bench_sampler(args) -> None:
    r = bench_sampler(args.config, args.steps, args.batch, args.repeats, args.device)
    print(f"{'what':<24}{'seconds':>10}{'vs bare':>10}")
    print(f"{f'{args.steps} bare forwards':<24}{r['bare_s']:>10.3f}{'1.000':>10}")
    print(f"{'ancestral loop':<24}{r['ancestral_s']:>10.3f}{r['ancestral_s'] / r['bare_s']:>10.3f}")
    print(f"{'ddim loop':<24}{r['ddim_s']:>10.3f}{r['ddim_s'] / r['bare_s']:>10.3f}")
    print(f"sampler overhead: ancestral {100 * r['ancestral_overhead']:.1f} %, ddim {100 * r['ddim_overhead']:.1f} % "
          f"(config {args.config}, batch {args.batch}, best of {args.repeats})")


def _bench_guidance(args) -> None:
    pipeline = args.config or "tutorial-text"
    r = bench_guidance(pipeline, args.steps, args.batch, args.repeats, args.device)
    print(f"{'guidance':<12}{'s/sample':>10}{'vs none':>10}")
    for key, seconds in r.items():  # {"none_s_per_sample": ..., "cfg_s_per_sample": ..., ...}: bench's guidances
        print(f"{key.removesuffix('_s_per_sample'):<12}{seconds:>10.4f}{seconds / r['none_s_per_sample']:>10.2f}")
    print(f"(pipeline {pipeline}, {args.steps} steps, batch {args.batch}, best of {args.repeats})")


def _bench_loader(args) -> None:
    loader = bench_loader(args.config, args.steps, tuple(range(args.max_workers + 1)), _overrides(args.set))
    train = bench_train(args.config, min(args.steps, 10), args.device, _overrides(args.set))["images_per_s"]
    print(f"{'input pipeline':<24}{'images/s':>10}{'vs training':>13}")
    for workers, rate in loader.items():
        print(f"{f'loader, {workers} workers':<24}{rate:>10.1f}{rate / train:>12.1f}x")
    print(f"{'training step':<24}{train:>10.1f}{1:>12.1f}x")
    print(f"(config {args.config}; the loader keeps up when its rate is above the training step's)")


def _bench_train(args) -> None:
    r = bench_train(args.config, args.steps, args.device, _overrides(args.set))
    print(f"train {args.config}: {r['images_per_s']:.1f} images/s ({r['s_per_step']:.3f} s/step at batch "
          f"{r['batch_size']})")


def cmd_fetch(args) -> int:
    out = fetch(args.url, args.out, args.sha256, progress=not args.no_progress, retries=args.retries)
    print(f"{out}: sha256 {sha256_file(out)} verified")
    return 0


def cmd_convert(args) -> int:
    out = convert(args.released, args.out, args.config, args.dtype)
    print(f"wrote {out} and {out.with_suffix('.json')}: load with gm.load_pipeline({str(out)!r}) "
          "or gm.pretrained.load_model")
    return 0


# -- the parser: one function per subcommand's flags ------------------------------------------------------------
COUNT, NATURAL = whole_number(1), whole_number(0)  # flag types: counts >= 1; labels and retries >= 0


def _train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="config name (see `glide-minimal info --list`) or a .yaml path")
    p.add_argument("--out", help="output folder for checkpoint, config and log (default runs/<config>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--max-steps", type=int, help="stop at this step (default: the config's train.max_steps)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.lr=1e-4")
    p.add_argument("--device", type=device_name, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--threads", type=COUNT, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def _sample_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", required=True, help="a shipped checkpoint name, e.g. tutorial-ddpm")
    p.add_argument("--num-images", type=COUNT, default=16,
                   help="unconditional pipelines, or images of one --prompt: how many images")
    p.add_argument("--labels", type=NATURAL, nargs="+", help="class-conditional pipelines: one label per image")
    p.add_argument("--prompt", nargs="+",
                   help="text pipelines: a caption (several: one image each); \"\" = unconditional")
    p.add_argument("--guidance", default="cfg", choices=TextPipeline.GUIDANCE, help="text guidance")
    p.add_argument("--guidance-scale", type=finite_number(0), default=3.0, help="0 or more (finite)")
    p.add_argument("--upsample", action="store_true",
                   help="text pipelines: run the cascade, the base model then its upsampler companion (fast27)")
    p.add_argument("--method", default="cfg", choices=ClassPipeline.METHODS, help="class guidance")
    p.add_argument("--steps", default=None, help="sampling steps or a respacing spec (100, ddim50, fast27)")
    p.add_argument("--sampler", default="ancestral", choices=SAMPLERS)
    p.add_argument("--eta", type=finite_number(0, 1), default=0.0, help="DDIM noise in [0, 1]")
    p.add_argument("--seed", type=seed_number, default=0)
    p.add_argument("--nrow", type=COUNT, default=8, help="images per row of the grid")
    p.add_argument("--out", type=image_path, default="samples.png",
                   help=f"the grid image, checked before sampling; extensions: {', '.join(IMAGE_FORMATS)}")
    p.add_argument("--device", type=device_name, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--threads", type=COUNT, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")


def _info_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config")
    p.add_argument("--list", action="store_true", help="list the config names")
    p.add_argument("--gpus", type=int, default=1,
                   help="GPUs the global batch (and, with FSDP, the model) is split over")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")


def _bench_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["sampler", "train", "guidance", "released", "loader"])
    p.add_argument("--config", help="config (sampler, train; default tutorial-ddpm) or shipped pipeline (guidance; "
                                    "default tutorial-text)")
    p.add_argument("--steps", type=COUNT, default=50)
    p.add_argument("--batch", type=COUNT, help="images (default 16; released: 1)")
    p.add_argument("--repeats", type=COUNT, default=3)
    p.add_argument("--scale", default="full", choices=["full", "tiny"],
                   help="released: the released-size models, or tiny stand-ins (for tests)")
    p.add_argument("--base-steps", default="100", help="released: the official base steps (ancestral)")
    p.add_argument("--fast-base-steps", default=FAST_BASE_STEPS, help="released: our base steps")
    p.add_argument("--upsample-steps", default=RELEASE_UPSAMPLE_STEPS,
                   help="released: the official upsampler steps (sampled with DDIM, as the release does)")
    p.add_argument("--fast-upsample-steps", default=FAST_UPSAMPLE_STEPS, help="released: our upsampler steps")
    p.add_argument("--fast-sampler", default=FAST_SAMPLER, choices=SAMPLERS,
                   help=f"released: our sampler in both stages (default {FAST_SAMPLER}: DPM-Solver++(2M))")
    p.add_argument("--compile", action="store_true", help="released: torch.compile the models in the fast setting")
    p.add_argument("--no-measure", action="store_true",
                   help="released: our precision and layout as speed.fast_settings gives them (bf16 where native, "
                        "channels_last) instead of the fastest measured here")
    p.add_argument("--max-workers", type=NATURAL, default=2, help="loader: time 0 .. this many DataLoader workers")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="train, loader: override a config value, e.g. data.path=my_folder")
    p.add_argument("--device", type=device_name)
    p.add_argument("--threads", type=COUNT)


def _fetch_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("url")
    p.add_argument("--sha256", required=True, help="the file's expected sha256 (64 hex characters)")
    p.add_argument("--out", required=True, help="where to put it; the partial download is OUT.part until verified")
    p.add_argument("--retries", type=NATURAL, default=3, help="resume a dropped transfer this many times")
    p.add_argument("--no-progress", action="store_true")


def _convert_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("released", nargs="+", help="one released file (base.pt, upsample.pt, ...), or both noised CLIP "
                                               "files (clip_image_enc.pt clip_text_enc.pt) for one CLIP model")
    p.add_argument("--out", required=True, help="output .safetensors path (the config JSON goes next to it)")
    p.add_argument("--config", help="config name or path (default: the glide-filtered-* config of the file)")
    p.add_argument("--dtype", default="keep", choices=list(DTYPES))


class Command(NamedTuple):
    run: Callable[[argparse.Namespace], int]  # returns the exit code
    add_flags: Callable[[argparse.ArgumentParser], None]
    help: str


# The dispatch table, in --help's order.
COMMANDS = {
    "train": Command(cmd_train, _train_flags, "train a model from a config (runs unchanged under torchrun)"),
    "sample": Command(cmd_sample, _sample_flags, "sample a grid of images from a shipped pipeline"),
    "info": Command(cmd_info, _info_flags, "parameters, and training memory per GPU for DDP and FSDP"),
    "bench": Command(cmd_bench, _bench_flags, "benchmarks: sampler overhead, training throughput, guidance cost, the "
                                              "released-size cascade (official settings vs ours)"),
    "fetch": Command(cmd_fetch, _fetch_flags, "download a file (released checkpoints) with resume and a sha256 check"),
    "convert": Command(cmd_convert, _convert_flags,
                       "released glide-text2im checkpoint(s) (.pt) -> safetensors + config JSON"),
}
# Bad input the user can fix: main() reports it in one line, without a traceback.
EXPECTED_ERRORS = (ValueError, KeyError, OSError, yaml.YAMLError, CheckpointError, DownloadError)


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="glide-minimal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_flags(sub.add_parser(name, help=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code: 0, 2 for bad input (one line on stderr), 3 for a diverged run.
    An unexpected exception (a bug) is not caught: its traceback shows."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad flag already reported in one line (2)
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    try:
        return COMMANDS[args.command].run(args)
    except EXPECTED_ERRORS as e:
        if _is_bug(e):
            raise
        print(f"glide-minimal: error: {error_message(e)}", file=sys.stderr)
        return 2


def _is_bug(e: BaseException) -> bool:
    """A KeyError of a bare key is a lookup that failed (a bug, which keeps its traceback), not an "unknown
    name ..." message."""
    return isinstance(e, KeyError) and not (e.args and isinstance(e.args[0], str) and " " in e.args[0])


if __name__ == "__main__":
    sys.exit(main())
