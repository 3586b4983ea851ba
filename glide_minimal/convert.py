"""The released GLIDE (filtered) checkpoints -> glide_minimal state dicts and checkpoint files.

openai/glide-text2im ships six PyTorch files: base, upsample, base-inpaint, upsample-inpaint (U-Nets
with their caption transformer) and the noised CLIP's image and text encoders. Our modules were
written to the release's layouts, so conversion is renaming only, never a transpose or a reshape:

- U-Nets: every name is already ours, except that the caption transformer lives in our
  `text_encoder` submodule (token_embedding, positional_embedding, padding_embedding, transformer.*,
  final_ln). The semantics match too: per-head [q | k | v] channels, text keys/values in front of the
  pixels' in every attention layer, cos-then-sin timestep embedding, the last position as the pooled
  caption, bilinear low-res upsampling, inputs in the order [x_t | image * mask | mask | low-res].
- Noised CLIP: the release's own module tree (blocks.input, blocks.block_i.f_attn / f_mlp with
  w, b, g parameters, blocks.output) maps name for name onto ours. Its `Affine` stores weights as
  [out, in] like nn.Linear, so no transpose. It standardises pixels inside the encoder, which our
  encoder does with clip.input_norm: "clip".

Files are read with torch.load(weights_only=True): only tensors are unpickled, never code.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Iterable

import torch

from .checkpoint import CheckpointError, atomic_write_bytes, save_tensors
from .config import Config, load_config
from .models import build_model

# Each released file and the config that describes it.
CONFIGS = {
    "base": "glide-filtered-base",
    "upsample": "glide-filtered-upsample",
    "base-inpaint": "glide-filtered-base-inpaint",
    "upsample-inpaint": "glide-filtered-upsample-inpaint",
    "clip-image": "glide-filtered-clip-image",
    "clip-text": "glide-filtered-clip-text",
    "clip": "glide-filtered-clip",  # both CLIP files together -> one NoisedCLIP
}
# The U-Net variants differ only in the first conv's input channels: x_t (3), + image * mask and mask (4),
# + the upsampled low-res image (3).
UNET_KINDS_BY_INPUT_CHANNELS = {3: "base", 6: "upsample", 7: "base-inpaint", 10: "upsample-inpaint"}
# The caption transformer's parameters, top-level in the release, inside `text_encoder` in our U-Net.
TEXT_NAMES = ("token_embedding.", "positional_embedding", "padding_embedding", "transformer.", "final_ln.")
# The release's logit scale for CLIP guidance (its clip/config.yaml): a constant, not in either file.
RELEASED_CLIP_LOGIT_SCALE = 100.0

_BLOCK = {  # inside blocks.block_<i>: release -> ours (under blocks.<i>)
    "f_attn.ln.g": "ln_1.weight", "f_attn.ln.b": "ln_1.bias",
    "f_attn.f_q.w": "attn.q_proj.weight", "f_attn.f_q.b": "attn.q_proj.bias",
    "f_attn.f_k.w": "attn.k_proj.weight",  # no key bias in either (softmax ignores it)
    "f_attn.f_v.w": "attn.v_proj.weight", "f_attn.f_v.b": "attn.v_proj.bias",
    "f_attn.f_c.w": "attn.out_proj.weight", "f_attn.f_c.b": "attn.out_proj.bias",
    "f_mlp.ln.g": "ln_2.weight", "f_mlp.ln.b": "ln_2.bias",
    "f_mlp.f_1.w": "mlp.c_fc.weight", "f_mlp.f_1.b": "mlp.c_fc.bias",
    "f_mlp.f_2.w": "mlp.c_proj.weight", "f_mlp.f_2.b": "mlp.c_proj.bias",
}
_CLIP_ENDS = {  # blocks.input.* and blocks.output.*: release -> ours, per encoder
    "clip-image": {
        "blocks.input.w_t": "time_embedding.weight", "blocks.input.patch_proj": "patch_proj.weight",
        "blocks.input.w_pos": "positional_embedding", "blocks.input.ln.g": "ln_pre.weight",
        "blocks.input.ln.b": "ln_pre.bias", "blocks.output.ln.g": "ln_post.weight",
        "blocks.output.ln.b": "ln_post.bias", "blocks.output.f.w": "proj.weight",
    },
    "clip-text": {
        "blocks.input.w_voc": "token_embedding.weight", "blocks.input.w_pos": "positional_embedding",
        "blocks.output.ln.g": "ln_final.weight", "blocks.output.ln.b": "ln_final.bias",
        "blocks.output.f.w": "proj.weight",
    },
}


def load_released(path: str | Path) -> dict[str, torch.Tensor]:
    """A released .pt file as a state dict. Only tensors are unpickled (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"released checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a non-checkpoint, a truncated download, or a pickle that is more than tensors
        raise CheckpointError(f"{path} is not a released GLIDE checkpoint that loads with "
                              f"weights_only=True: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def detect_kind(shapes: dict[str, Iterable[int]]) -> str:
    """Which released file a state dict (or a key -> shape dict) is: base, upsample, base-inpaint,
    upsample-inpaint, clip-image or clip-text."""
    if "blocks.input.w_t" in shapes:
        return "clip-image"
    if "blocks.input.w_voc" in shapes:
        return "clip-text"
    first = shapes.get("input_blocks.0.0.weight")
    if first is not None:
        channels = tuple(first)[1]
        if channels in UNET_KINDS_BY_INPUT_CHANNELS:
            return UNET_KINDS_BY_INPUT_CHANNELS[channels]
        raise CheckpointError(f"a U-Net whose first conv takes {channels} channels is none of the released models "
                              f"(3: base, 6: upsample, 7: base-inpaint, 10: upsample-inpaint)")
    raise CheckpointError(f"not a released GLIDE checkpoint: it has neither input_blocks.0.0.weight (U-Nets) nor "
                          f"blocks.input.w_t / blocks.input.w_voc (noised CLIP); first keys: {sorted(shapes)[:5]}")


def our_key(key: str, kind: str) -> str:
    """The name of a released parameter in our module (for `kind`, see detect_kind)."""
    if kind in ("base", "upsample", "base-inpaint", "upsample-inpaint"):
        return "text_encoder." + key if key.startswith(TEXT_NAMES) else key
    if kind not in _CLIP_ENDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of: {', '.join(k for k in CONFIGS if k != 'clip')}")
    if key in _CLIP_ENDS[kind]:
        return _CLIP_ENDS[kind][key]
    match = re.fullmatch(r"blocks\.block_(\d+)\.(.+)", key)
    if match and match.group(2) in _BLOCK:
        return f"blocks.{match.group(1)}.{_BLOCK[match.group(2)]}"
    raise KeyError(f"released {kind} parameter {key!r} has no counterpart in glide_minimal")


def convert_state_dict(state: dict[str, torch.Tensor], kind: str | None = None) -> dict[str, torch.Tensor]:
    """Released state dict -> ours: the same tensors (same shapes and dtype) under our names."""
    kind = kind or detect_kind({k: v.shape for k, v in state.items()})
    return {our_key(k, kind): v for k, v in state.items()}


def convert_clip(image_state: dict[str, torch.Tensor], text_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Both released CLIP encoders -> one NoisedCLIP state dict, with the release's fixed logit scale."""
    out = {f"image_encoder.{k}": v for k, v in convert_state_dict(image_state, "clip-image").items()}
    out.update({f"text_encoder.{k}": v for k, v in convert_state_dict(text_state, "clip-text").items()})
    out["logit_scale"] = torch.tensor(math.log(RELEASED_CLIP_LOGIT_SCALE))
    return out


def check_matches(state: dict[str, torch.Tensor], cfg: Config) -> None:
    """Raise CheckpointError unless `state` has exactly the keys and shapes of cfg's model (built on meta)."""
    own = {k: tuple(v.shape) for k, v in build_model(cfg, device="meta").state_dict().items()}
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {own[k]}" for k in sorted(own.keys() & state.keys())
              if tuple(state[k].shape) != own[k]]
    if missing or unexpected or shapes:
        parts = [f"missing {len(missing)} keys (e.g. {missing[:3]})"] if missing else []
        parts += [f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})"] if unexpected else []
        parts += [f"{len(shapes)} shape mismatches (e.g. {shapes[:2]})"] if shapes else []
        raise CheckpointError(f"the converted weights do not fit config {cfg.name!r}: " + "; ".join(parts))


DTYPES = {"keep": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def convert(paths: str | Path | list[str | Path], out: str | Path, config: str | Path | Config | None = None,
            dtype: str = "keep") -> Path:
    """Convert released file(s) to `out` (.safetensors, with the config in its metadata) and `out`.json.

    paths: one released file, or both CLIP files (image and text encoder, any order) for one NoisedCLIP.
    config: a config name/path/Config; default: the glide-filtered-* config of the detected file.
    The result loads with gm.pretrained.load_model(out) and gm.load_pipeline(out).
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not valid; choose one of: {', '.join(DTYPES)}")
    states = [load_released(p) for p in paths]
    kinds = [detect_kind({k: v.shape for k, v in s.items()}) for s in states]
    if len(states) == 1:
        kind, state = kinds[0], convert_state_dict(states[0], kinds[0])
    elif sorted(kinds) == ["clip-image", "clip-text"]:
        by_kind = dict(zip(kinds, states))
        kind, state = "clip", convert_clip(by_kind["clip-image"], by_kind["clip-text"])
    else:
        raise ValueError(f"convert takes one released file, or the two CLIP encoder files together; got "
                         f"{', '.join(f'{p.name} ({k})' for p, k in zip(paths, kinds))}")
    cfg = config if isinstance(config, Config) else load_config(config or CONFIGS[kind])
    check_matches(state, cfg)
    if DTYPES[dtype] is not None:
        state = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state.items()}
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must end in .safetensors, got {out}")
    config_dict = cfg.to_dict()
    save_tensors(out, state, {"config": config_dict, "name": out.stem, "source": [p.name for p in paths],
                              "converted_from": "openai/glide-text2im " + kind})
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(config_dict, indent=2, sort_keys=True) + "\n").encode())
    return out
