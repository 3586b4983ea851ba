"""Configs: small dataclasses loaded from YAML, with errors that name the bad key and the valid choices.

A config file may start from another with `inherit: <name>` and override only what differs, so a
`*-gpu` config reads as "the tutorial one, but bigger". Every config lives in `glide_minimal/configs/`.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from .checks import finite_range_rule
from .diffusion.gaussian import LOSS_TYPES, MEAN_TYPES, VAR_TYPES
from .diffusion.schedule import SCHEDULES
from .vocabulary import WORD_VOCABULARIES

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class UNetConfig:
    """The ADM U-Net of Dhariwal & Nichol (2021), as GLIDE uses it."""

    image_size: int = 16
    in_channels: int = 3  # channels of x_t (extra conditioning channels are added by the model)
    out_channels: int = 3  # channels of eps; doubled when learn_sigma
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes (px) that get self-attention
    num_head_channels: int = 32
    # GroupNorm groups (ADM: 32), or the largest count dividing a layer's width. With one channel per group
    # (32 channels) GroupNorm removes each channel's spatial mean everywhere, and the network can no longer
    # predict the per-channel mean of eps: chapter 6's 32-channel upsampler needs fewer, wider groups.
    norm_groups: int = 32
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    learn_sigma: bool = False
    num_classes: int = 0  # > 0: class-conditional, with one extra "null" label for classifier-free guidance
    # Text conditioning (GLIDE): a transformer over the caption; text_ctx 0 means no text.
    text_ctx: int = 0  # tokens per caption (padded / truncated to this)
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_final_ln: bool = True
    text_padding: bool = True  # padded positions take a learned per-position embedding
    # shapesworld (word level) | glide-bpe (the released models' byte-level BPE) | bpe (a byte-level BPE of
    # text_vocab_size tokens learned from the training captions: models/learned_bpe.py)
    tokenizer: str = "shapesworld"
    text_vocab_size: int = 0  # token embedding rows; 0: the tokenizer's size
    tokenizer_file: str = ""  # bpe: its tokenizer.json (set by training and loading; relative: beside the weights)
    # Extra input channels (added by the model; in_channels stays the channels of x_t):
    super_res: bool = False  # + the low-resolution image, upsampled bilinearly to image_size (in_channels more)
    inpaint: bool = False  # + the known image times the mask and the mask (in_channels + 1 more)
    # super_res only: the noise-augmentation level k of the low-res image is an input (cascaded diffusion,
    # Ho et al. 2021), embedded like t and added to the time embedding. The released upsampler has none.
    aug_level_embed: bool = False


@dataclass
class DiffusionConfig:
    num_timesteps: int = 1000
    noise_schedule: str = "linear"  # linear | squaredcos_cap_v2
    model_var_type: str = "fixed_small"  # fixed_small | fixed_large | learned_range
    loss_type: str = "mse"  # mse (L_simple) | hybrid (L_simple + L_vlb)
    # What the network predicts: eps (DDPM, GLIDE) | v = sqrt(abar) eps - sqrt(1 - abar) x_0 (Salimans & Ho 2022;
    # chapter 6's upsampler: an eps model must infer each channel's noise mean from a whole image, and when it
    # cannot, its samples keep a color cast; v is x_0 at high noise, which the low-res input gives locally).
    model_mean_type: str = "eps"
    sample_respacing: str = "100"  # default respacing at sampling time


@dataclass
class DataConfig:
    dataset: str = "digits"  # digits | shapesworld | folder | webdataset (your own captioned images: imagetext.py)
    image_size: int = 16
    p_uncond: float = 0.0  # probability that a label / caption is replaced by the null one (classifier-free guidance)
    # ShapesWorld only:
    max_objects: int = 1  # 1: every single-object scene once; 2: num_scenes random one- or two-object scenes
    num_scenes: int = 4000  # scenes drawn when max_objects is 2
    two_object_share: float = 0.5  # of those scenes, the share with two objects (the rest have one)
    held_out: tuple[str, ...] = ("magenta triangle", "cyan cross")  # "color shape" pairs never trained on
    # canonical: "a large red circle in the top left", one caption per scene. varied (chapter 4, captions.py):
    # num_scenes one- or two-object scenes, each with a caption people might write (synonyms, word orders,
    # attributes and places left out) in the training phrasings; two objects may then be large and small.
    captions: str = "canonical"
    # Super-resolution models (model.super_res): the conditioning image is the exact area-average of the
    # target at low_res_size px (0: image_size // 4, GLIDE's 4x).
    low_res_size: int = 0
    # Noise augmentation (Ho et al. 2021, section 4.2): every low-res image is noised by k forward diffusion
    # steps, k uniform in 0..low_res_aug_max (k = 0: clean; 0: off). low_res_aug_sample: the pipeline's default k.
    low_res_aug_max: int = 0
    low_res_aug_sample: int = 0
    # > 0: train on random crop_size x crop_size crops (with the matching low-res crop). The U-Net is fully
    # convolutional, so a model trained on crops samples whole images; crops cost less per step.
    crop_size: int = 0
    # Inpainting models (model.inpaint): the random region to fill of each example, drawn from these kinds.
    mask_kinds: tuple[str, ...] = ("box", "freeform")
    # Your own captioned images (dataset folder | webdataset), streamed from disk while the model trains:
    # folder: a directory with metadata.jsonl (or metadata.csv) lines {"file_name", "text"};
    # webdataset: tar shards, brace-expanded ("shards/{0000..0099}.tar"), local paths or URLs.
    path: str = ""
    num_workers: int = 2  # DataLoader worker processes that decode images (0: decode in the training process)
    shuffle_buffer: int = 1000  # webdataset: samples mixed across shards before batching


@dataclass
class CLIPConfig:
    """The noised CLIP of GLIDE (section 2.4): a ViT image encoder that also sees t, and a text encoder."""

    image_size: int = 16
    in_channels: int = 3
    patch_size: int = 2
    width: int = 128
    layers: int = 4
    heads: int = 4
    text_ctx: int = 16
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    embed_dim: int = 64
    num_timesteps: int = 1000  # a learned embedding per diffusion timestep
    tokenizer: str = "shapesworld"  # shapesworld | clip-bpe (CLIP's BPE, the released noised CLIP's) | bpe (learned)
    tokenizer_file: str = ""  # bpe: its tokenizer.json, as model.tokenizer_file
    vocab_size: int = 0  # token embedding rows; 0: the tokenizer's size (the release rounds CLIP's 49,408 up to 65,536)
    # none: the encoder sees x_t as it is; clip: (x_t + 1) * 127.5 standardised with CLIP's per-channel pixel
    # mean and std, inside the encoder, as the released noised CLIP does
    input_norm: str = "none"
    part: str = "both"  # both encoders | image | text: one encoder alone (the release ships them as two files)
    noised: bool = True  # false: train on clean images only (t = 0), the ordinary CLIP GLIDE argues against
    # Hard negatives (NegCLIP, Yuksekgonul et al. 2023): for each training caption, this many captions that differ
    # from it in one attribute of one object, or swap an attribute between its two objects ("a red circle" ->
    # "a blue circle"), drawn once when the data loads; they join the batch's captions as extra wrong answers
    # for every image, so a CLIP must read each attribute, not only the easiest. ShapesWorld captions that name
    # every attribute only (data.captions: canonical). 0: none.
    hard_negatives: int = 0


@dataclass
class TrainConfig:
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0  # AdamW's decoupled weight decay, >= 0
    warmup_steps: int = 100
    max_steps: int = 2000
    ema_rate: float = 0.999
    grad_clip: float = 1.0  # the largest gradient norm (clipped above it); 0: no clipping
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: fp32 on CPU, bf16 on GPU)
    # Several GPUs (under torchrun): ddp replicates the model on every GPU; fsdp shards weights, gradients,
    # optimizer state and EMA over them (for models that do not fit one GPU). One process without torchrun
    # trains the plain model either way. See glide_minimal/parallel.py and `glide-minimal info --gpus N`.
    parallel: str = "ddp"  # ddp | fsdp
    activation_checkpointing: bool = False  # recompute each block's activations in backward (less memory)
    grad_accum_steps: int = 1  # micro-batches per step; batch_size stays the global batch of one update
    log_every: int = 50
    ckpt_every: int = 500
    seed: int = 0
    # Fine-tune: start from this shipped checkpoint (or .safetensors path) instead of a fresh init. Input
    # channels and embeddings the source lacks (inpaint, super_res, aug_level_embed) start at zero, so the
    # new model computes exactly what the source did (see finetune.py). "": train from scratch.
    init_from: str = ""


@dataclass
class Config:
    name: str
    description: str = ""
    task: str = "diffusion"  # diffusion (a denoiser) | classifier (a noised classifier, model.out_channels classes)
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    clip: CLIPConfig = field(default_factory=CLIPConfig)  # used by task: clip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# The valid values of every key with a fixed set of them: the one list the modules and the CLI use. A tuple key
# (data.mask_kinds) takes one or more of them, checked by validate() for the models that use it.
CHOICES = {
    # the lists the modules that implement each choice define
    "diffusion.noise_schedule": SCHEDULES,
    "diffusion.model_var_type": VAR_TYPES,
    "diffusion.loss_type": LOSS_TYPES,
    "diffusion.model_mean_type": MEAN_TYPES,
    "data.dataset": ("digits", "shapesworld", "folder", "webdataset"),
    "data.mask_kinds": ("box", "freeform"),
    "data.captions": ("canonical", "varied"),
    "model.tokenizer": (*WORD_VOCABULARIES, "glide-bpe", "bpe"),
    "clip.tokenizer": (*WORD_VOCABULARIES, "clip-bpe", "bpe"),
    "clip.input_norm": ("none", "clip"),
    "clip.part": ("both", "image", "text"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.parallel": ("ddp", "fsdp"),
    "task": ("diffusion", "classifier", "clip"),
}


class FloatRange(NamedTuple):
    """A float key's valid range as checks.finite_range_rule takes it (None: unbounded), and what an end means."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    note: str = ""


# The range of every float key that has one; every float key must be finite (NaN fails no comparison, so a bare
# range check would let it through to a NaN loss).
FLOAT_RANGES = {
    "model.dropout": FloatRange(0, 1, hi_open=True),
    "data.p_uncond": FloatRange(0, 1, hi_open=True),
    "train.lr": FloatRange(0, lo_open=True),
    "train.weight_decay": FloatRange(0, note="0: no weight decay"),
    "train.ema_rate": FloatRange(0, 1, hi_open=True),
    # 0 is "off" as elsewhere in the configs (warmup_steps, crop_size, low_res_aug_max)
    "train.grad_clip": FloatRange(0, note="the largest gradient norm; 0: no clipping"),
}
SECTIONS = {"model": UNetConfig, "diffusion": DiffusionConfig, "data": DataConfig, "train": TrainConfig,
            "clip": CLIPConfig}


def available_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _read_yaml(name: str) -> dict[str, Any]:
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.exists():
        known = available_configs()
        near = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise KeyError(f"unknown config {name!r}{hint}; known: {', '.join(known)}")
    return _resolve_inherit(yaml.safe_load(path.read_text()) or {})


def _resolve_inherit(raw: dict[str, Any]) -> dict[str, Any]:
    """Apply `inherit: <name>`: start from that config and override it section by section."""
    parent = raw.pop("inherit", None)
    if parent is None:
        return raw
    merged = _read_yaml(parent)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _check_choice(key: str, value: Any) -> None:
    choices = CHOICES.get(key)
    if choices and value not in choices:
        raise ValueError(f"{key} = {value!r} is not valid; choose one of: {', '.join(choices)}")


def float_error(key: str, value: Any) -> str | None:
    """None if `value` is valid for the float key `key` (a finite number in its FLOAT_RANGES range); else the
    error: "train.lr must be > 0, got 0.0", "train.lr must be a finite number > 0, got nan"."""
    r = FLOAT_RANGES.get(key, FloatRange())
    rule = finite_range_rule(value, r.lo, r.hi, lo_open=r.lo_open, hi_open=r.hi_open)
    if rule is None:
        return None
    return f"{key} must be {rule}{f' ({r.note})' if r.note else ''}, got {value!r}"


def _coerce(key: str, default: Any, value: Any) -> Any:
    """A YAML value of `key` as the type of its default (lists become tuples, 3.0 an int, "1e-4" a float), or a
    ValueError naming the key."""
    if isinstance(default, tuple):
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)  # validate() checks the elements
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{key} must be an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(float_error(key, value))  # not a number: the message says what it must be
        value = float(value)
    _check_choice(key, value)
    return value


def _build_section(cls: type, section: str, values: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in (values or {}).items():
        if key not in fields:
            raise ValueError(f"unknown key {section}.{key!r}; valid keys of {section!r}: {', '.join(fields)}")
        kwargs[key] = _coerce(f"{section}.{key}", fields[key].default, value)
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Build and validate a Config from a nested dict (the YAML's shape)."""
    raw = dict(raw)
    top = {"name", "description", "task", *SECTIONS}
    for key in raw:
        if key not in top:
            raise ValueError(f"unknown top-level key {key!r}; valid keys: {', '.join(sorted(top))}")
    sections = {s: _build_section(cls, s, raw.get(s) or {}) for s, cls in SECTIONS.items()}
    task = raw.get("task", "diffusion")
    _check_choice("task", task)
    cfg = Config(name=raw.get("name", "custom"), description=raw.get("description", ""), task=task, **sections)
    validate(cfg)
    return cfg


def low_res_size(cfg: Config) -> int:
    """The conditioning image's side for a super_res model: data.low_res_size, or image_size // 4 (GLIDE's 4x)."""
    return cfg.data.low_res_size or max(1, cfg.model.image_size // 4)


# -- validate: the checks across keys, one function per section ------------------------------------------------
def validate(cfg: Config) -> None:
    """Every check a Config must pass beyond its keys' types: each error names the key and what would be valid.

    A CLIP config uses no U-Net, so its model section only has to be well-formed.
    """
    _validate_floats(cfg)
    _validate_model(cfg.model)
    _validate_train(cfg)
    _validate_diffusion(cfg)
    if cfg.task == "clip":
        _validate_clip(cfg.clip)
    elif cfg.task == "classifier":
        _validate_classifier(cfg)
    _validate_data(cfg)
    if cfg.task != "clip":
        _validate_unet(cfg.model)
        _validate_super_res(cfg)
        _validate_crops(cfg)
        _validate_inpaint(cfg)


def _positive(value: float, key: str) -> None:
    if not value > 0:  # written so that NaN fails too
        raise ValueError(f"{key} must be positive, got {value!r}")


def _validate_floats(cfg: Config) -> None:
    """Every float key of every section: finite, and inside its FLOAT_RANGES range when it has one."""
    for section in SECTIONS:
        values = getattr(cfg, section)
        for f in dataclasses.fields(values):
            if isinstance(f.default, float) and (error := float_error(f"{section}.{f.name}", getattr(values, f.name))):
                raise ValueError(error)


def _validate_model(m: UNetConfig) -> None:
    """Sizes and counts positive, classes or text (not both), and a caption transformer that splits into heads."""
    for key in ("image_size", "in_channels", "out_channels", "model_channels", "num_res_blocks", "num_head_channels",
                "norm_groups"):
        _positive(getattr(m, key), f"model.{key}")
    if not m.channel_mult or any(mult <= 0 for mult in m.channel_mult):
        raise ValueError(f"model.channel_mult {list(m.channel_mult)} must be positive integers (each level's width is "
                         "model_channels * mult)")
    if m.num_classes and m.text_ctx:
        raise ValueError("a model is conditioned on classes (model.num_classes) or on text (model.text_ctx), not both")
    if m.text_vocab_size < 0:
        raise ValueError(f"model.text_vocab_size must be >= 0 (0: the tokenizer's size), got {m.text_vocab_size}")
    if m.text_ctx and m.tokenizer == "bpe" and m.text_vocab_size < 258:
        raise ValueError(f"model.tokenizer 'bpe' is learned with model.text_vocab_size tokens: set it >= 258 "
                         f"(padding, the 256 bytes and merges; e.g. 4096), got {m.text_vocab_size}")
    if m.text_ctx:
        # positive before divisible: `text_width % 0` would be a ZeroDivisionError, not an error naming the key
        for key in ("text_width", "text_layers", "text_heads"):
            _positive(getattr(m, key), f"model.{key}")
        if m.text_width % m.text_heads:
            raise ValueError(f"model.text_width {m.text_width} is not divisible by model.text_heads {m.text_heads}")


def _validate_train(cfg: Config) -> None:
    """Counts positive, micro-batches that split the batch, and what each task may be trained with."""
    t = cfg.train
    for key in ("batch_size", "max_steps", "log_every", "ckpt_every", "grad_accum_steps"):
        _positive(getattr(t, key), f"train.{key}")
    if t.warmup_steps < 0:
        raise ValueError(f"train.warmup_steps must be >= 0 (0: no warmup), got {t.warmup_steps}")
    if t.batch_size % t.grad_accum_steps:
        divisors = [d for d in range(1, t.batch_size + 1) if t.batch_size % d == 0]
        raise ValueError(f"train.grad_accum_steps {t.grad_accum_steps} does not divide train.batch_size {t.batch_size} "
                         f"(the global batch is split into equal micro-batches); choose one of: "
                         f"{', '.join(map(str, divisors[:12]))}{', ...' if len(divisors) > 12 else ''}")
    if t.parallel == "fsdp" and t.precision == "fp16":
        raise ValueError("train.precision fp16 is not supported with train.parallel fsdp (its loss scaler would have "
                         "to agree across shards); choose train.precision bf16, fp32 or auto")
    if cfg.task == "clip" and t.grad_accum_steps > 1:
        raise ValueError(f"train.grad_accum_steps {t.grad_accum_steps}: CLIP's contrastive loss compares every image "
                         "with every caption of its batch, so micro-batches would change the loss; use 1")
    if t.init_from and cfg.task not in ("diffusion", "clip"):
        raise ValueError(f"train.init_from fine-tunes a diffusion model or continues a CLIP; a {cfg.task} config "
                         f"cannot start from {t.init_from!r}")


def _validate_diffusion(cfg: Config) -> None:
    """A chain of at least one step; a denoiser's variance, its loss and model.learn_sigma that agree."""
    d, m = cfg.diffusion, cfg.model
    _positive(d.num_timesteps, "diffusion.num_timesteps")
    if cfg.task != "diffusion":
        return  # a classifier or a CLIP is trained on q_sample only: no variance, no loss of the chain
    if (d.model_var_type == "learned_range") != m.learn_sigma:
        raise ValueError(
            f"model.learn_sigma={m.learn_sigma} does not match diffusion.model_var_type={d.model_var_type!r}: "
            "learned_range needs learn_sigma: true, fixed_small/fixed_large need learn_sigma: false"
        )
    if (d.loss_type == "hybrid") != (d.model_var_type == "learned_range"):
        raise ValueError(
            f"diffusion.loss_type={d.loss_type!r} does not fit diffusion.model_var_type={d.model_var_type!r}: only the "
            "hybrid loss trains a learned_range variance, so use hybrid with learned_range and mse with "
            "fixed_small/fixed_large")


def _validate_data(cfg: Config) -> None:
    """A dataset that fits the model (captions for text, labels for classes), whole images for all but denoisers,
    and images of the network's size."""
    data, m = cfg.data, cfg.model
    if data.crop_size and cfg.task != "diffusion":
        raise ValueError(f"data.crop_size is for diffusion models (fully convolutional); a {cfg.task} config takes "
                         "whole images: set data.crop_size: 0")
    if data.p_uncond > 0 and m.num_classes == 0 and m.text_ctx == 0:
        raise ValueError("data.p_uncond > 0 needs a conditional model (model.num_classes > 0 or model.text_ctx > 0)")
    conditioned = (cfg.task == "clip") or m.text_ctx > 0
    captioned = data.dataset != "digits"
    if captioned != conditioned and cfg.task != "classifier":
        raise ValueError(f"data.dataset {data.dataset!r} does not fit the model: ShapesWorld and your own folders "
                         "and shards have captions (set model.text_ctx > 0, or task: clip); digits have class labels")
    if data.dataset in ("folder", "webdataset"):
        if cfg.task == "classifier":
            raise ValueError(f"data.dataset {data.dataset!r} has captions, not class labels: a classifier trains on "
                             "digits or shapesworld")
        if not data.path:
            where = ("the folder with metadata.jsonl" if data.dataset == "folder"
                     else "the shards, e.g. 'shards/{0000..0099}.tar'")
            raise ValueError(f"data.dataset {data.dataset!r} needs data.path: {where}")
    if data.num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0, got {data.num_workers}")
    if data.shuffle_buffer < 1:
        raise ValueError(f"data.shuffle_buffer must be >= 1, got {data.shuffle_buffer}")
    if data.max_objects not in (1, 2):
        raise ValueError(f"data.max_objects must be 1 or 2, got {data.max_objects}")
    if not 0.0 <= data.two_object_share <= 1.0 or (data.two_object_share != 0.5 and data.max_objects != 2):
        raise ValueError(f"data.two_object_share is the share of two-object scenes, a probability in [0, 1] that "
                         f"needs data.max_objects: 2; got {data.two_object_share} with max_objects "
                         f"{data.max_objects}")
    if data.captions == "varied" and (data.dataset != "shapesworld" or data.max_objects != 2):
        raise ValueError("data.captions: varied describes ShapesWorld scenes of one or two objects: set "
                         "data.dataset: shapesworld and data.max_objects: 2 (a folder or shards bring their own "
                         "captions: set data.captions: canonical, the default)")
    canonical = data.dataset == "shapesworld" and data.captions == "canonical"
    if cfg.task == "clip" and cfg.clip.hard_negatives and not canonical:
        raise ValueError(f"clip.hard_negatives changes one attribute of a caption that names them all: it needs "
                         f"data.dataset: shapesworld with data.captions: canonical, got {data.dataset!r} with "
                         f"{data.captions!r} (set clip.hard_negatives: 0)")
    network, size = ("clip", cfg.clip.image_size) if cfg.task == "clip" else ("model", m.image_size)
    if data.image_size != size:
        raise ValueError(f"data.image_size ({data.image_size}) must equal {network}.image_size ({size})")


def _validate_clip(c: CLIPConfig) -> None:
    """Sizes and counts positive; patches that tile the image and widths that split into heads."""
    for key in ("image_size", "in_channels", "patch_size", "width", "layers", "heads", "text_ctx", "text_width",
                "text_layers", "text_heads", "embed_dim", "num_timesteps"):
        _positive(getattr(c, key), f"clip.{key}")
    if c.image_size % c.patch_size:
        raise ValueError(f"clip.image_size {c.image_size} is not divisible by clip.patch_size {c.patch_size}")
    for width, heads in (("width", "heads"), ("text_width", "text_heads")):
        w, h = getattr(c, width), getattr(c, heads)
        if w % h:
            raise ValueError(f"clip.{width} {w} is not divisible by clip.{heads} {h} (each head takes an equal "
                             "share of the width)")
    if c.vocab_size < 0:
        raise ValueError(f"clip.vocab_size must be >= 0 (0: the tokenizer's size), got {c.vocab_size}")
    if c.hard_negatives < 0:
        raise ValueError(f"clip.hard_negatives must be >= 0 (0: none), got {c.hard_negatives}")
    if c.tokenizer == "bpe" and c.vocab_size < 258:
        raise ValueError(f"clip.tokenizer 'bpe' is learned with clip.vocab_size tokens: set it >= 258 "
                         f"(padding, the 256 bytes and merges; e.g. 4096), got {c.vocab_size}")


def _validate_classifier(cfg: Config) -> None:
    """A noised classifier sees x_t and t only, and predicts model.out_channels classes."""
    m = cfg.model
    if m.super_res or m.inpaint:
        raise ValueError("a classifier config (task: classifier) takes no model.super_res or model.inpaint inputs")
    if m.learn_sigma or m.num_classes or cfg.data.p_uncond:
        raise ValueError("a classifier config (task: classifier) takes model.out_channels = number of classes and "
                         "no model.learn_sigma, model.num_classes or data.p_uncond")


def _validate_unet(m: UNetConfig) -> None:
    """An image size every level can halve, attention at sizes the U-Net has, and heads that split every width."""
    levels = len(m.channel_mult)
    if m.image_size % 2 ** (levels - 1):
        raise ValueError(
            f"model.image_size {m.image_size} is not divisible by 2**{levels - 1} (channel_mult has {levels} levels)"
        )
    sizes = {m.image_size // 2**i for i in range(levels)}
    bad = [r for r in m.attention_resolutions if r not in sizes]
    if bad:
        raise ValueError(f"model.attention_resolutions {bad} are not feature-map sizes of this U-Net; "
                         f"valid: {sorted(sizes)}")
    for mult in m.channel_mult:
        if (m.model_channels * mult) % m.num_head_channels:
            raise ValueError(
                f"model.num_head_channels {m.num_head_channels} must divide every level's width "
                f"(model_channels * channel_mult = {m.model_channels * mult})"
            )


def _validate_super_res(cfg: Config) -> None:
    """The low-res input and its noise augmentation (chapter 6): only for super_res models, and of a size that
    divides the image."""
    m, data = cfg.model, cfg.data
    if m.aug_level_embed and not m.super_res:
        raise ValueError("model.aug_level_embed embeds the low-res noise-augmentation level: it needs "
                         "model.super_res: true")
    if not m.super_res:
        for key in ("low_res_size", "low_res_aug_max", "low_res_aug_sample"):
            if getattr(data, key):
                raise ValueError(f"data.{key} is for super-resolution models: set model.super_res: true, "
                                 f"or data.{key}: 0")
        return
    low = low_res_size(cfg)
    if data.low_res_size < 0 or low >= m.image_size or m.image_size % low:
        raise ValueError(f"data.low_res_size {data.low_res_size} must divide model.image_size {m.image_size} and be "
                         f"smaller (e.g. {m.image_size // 4}); 0 means image_size // 4")
    for key in ("low_res_aug_max", "low_res_aug_sample"):
        if not 0 <= getattr(data, key) <= cfg.diffusion.num_timesteps:
            raise ValueError(f"data.{key} must be a number of forward steps in 0..{cfg.diffusion.num_timesteps} "
                             f"(diffusion.num_timesteps), got {getattr(data, key)}")


def _validate_crops(cfg: Config) -> None:
    """Crops (chapter 6) that the U-Net can halve and whose low-res crop is whole pixels."""
    m, crop_size = cfg.model, cfg.data.crop_size
    if not crop_size:
        return
    divisor = 2 ** (len(m.channel_mult) - 1)
    factor = m.image_size // low_res_size(cfg) if m.super_res else 1
    step = divisor * factor // math.gcd(divisor, factor)
    if not 0 < crop_size <= m.image_size or crop_size % step:
        raise ValueError(f"data.crop_size {crop_size} must be at most model.image_size ({m.image_size}) and a "
                         f"multiple of {step} (the U-Net halves the size {len(m.channel_mult) - 1} times"
                         + (f"; the low-res image is {factor}x smaller)" if m.super_res else ")") + "; 0: no crops")


def _validate_inpaint(cfg: Config) -> None:
    """An inpainting model's mask kinds (chapter 7): one or more of CHOICES["data.mask_kinds"]."""
    kinds, valid = cfg.data.mask_kinds, CHOICES["data.mask_kinds"]
    if cfg.model.inpaint and (not kinds or any(k not in valid for k in kinds)):
        raise ValueError(f"data.mask_kinds {list(kinds)} is not valid: choose one or more of: {', '.join(valid)}")


def parse_override(item: str) -> tuple[str, Any]:
    """'train.max_steps=10' -> ('train.max_steps', 10); the value is parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.key=value, e.g. train.max_steps=10")
    key, value = item.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def load_config(name_or_path: str | Path | dict, overrides: dict[str, Any] | None = None) -> Config:
    """Load a config by name (see `available_configs()`), from a .yaml/.json path, or from a dict.

    `overrides` maps dotted keys to values: {"train.max_steps": 10, "model.dropout": 0.1}.
    """
    if isinstance(name_or_path, dict):
        raw = json.loads(json.dumps(name_or_path))
    else:
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml", ".json") and path.exists():
            raw = _resolve_inherit(yaml.safe_load(path.read_text()) or {})
            raw.setdefault("name", path.stem)
        else:
            raw = _read_yaml(str(name_or_path))
            raw["name"] = str(name_or_path)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ValueError(f"override {dotted!r} must be <section>.<key> with section one of: {', '.join(SECTIONS)}")
        raw.setdefault(section, {})[key] = value
    return config_from_dict(raw)
