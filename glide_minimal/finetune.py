"""Fine-tuning a model that has more inputs than the one it starts from (GLIDE section 4.3).

GLIDE's inpainting models are its text models fine-tuned with extra input channels: the known image
(times the mask) and the mask. The new channels' first-layer weights start at zero, so at the first
step of fine-tuning the inpainting model computes exactly what the text model computed, whatever the
new inputs are; training then teaches it to use them. The same holds for adding the low-resolution
input of an upsampler or the noise-augmentation level (whose embedding's last layer starts at zero), and
to adding self-attention at more feature-map sizes (an attention block adds its output to its input through
a projection that starts at zero, so a new one passes its input through unchanged until it has learned).

A word-level text model may also move to a larger vocabulary and a longer caption context (chapter 4's
curriculum: from the canonical captions of one object to the captions people write): each known word keeps
its embedding, found by the word rather than by its id, and the context grows between the caption's words
and the last position, whose output is the pooled caption vector.

    model = build_model(load_config("tutorial-text-inpaint"))
    init_from_pretrained(model, "tutorial-text")   # every weight copied, the 4 new input channels zero
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from . import pretrained
from .checkpoint import CheckpointError
from .config import CLIPConfig, UNetConfig, config_from_dict
from .models.clip import NoisedCLIP
from .models.layers import AttentionBlock
from .models.text import WordTokenizer
from .models.unet import UNet, input_channel_groups
from .vocabulary import WORD_VOCABULARIES

FIRST_CONV = "input_blocks.0.0.weight"
# Fields that may differ between the source and the fine-tuned model: the added inputs, attention at more sizes,
# and dropout (no weights).
ADDED_INPUTS = ("super_res", "inpaint", "aug_level_embed")
# A word-level vocabulary may grow (words added) and the text context lengthen: grow_text_weights.
TEXT_MAY_GROW = ("tokenizer", "text_ctx", "text_vocab_size")
# (tokenizer_file: the Trainer copies it; attention_resolutions may only grow: transfer_weights checks)
MAY_DIFFER = (*ADDED_INPUTS, *TEXT_MAY_GROW, "attention_resolutions", "dropout", "tokenizer_file")
NEW_MODULES = ("aug_embed.",)  # parameters a source without aug_level_embed lacks; they keep their (zero-ended) init
TOKEN_EMBEDDING = "text_encoder.token_embedding.weight"
# CLIP fields that shape the training, not the weights: a second stage may change them.
CLIP_TRAINING_ONLY = ("hard_negatives", "noised", "tokenizer_file")
PER_POSITION = ("text_encoder.positional_embedding", "text_encoder.padding_embedding")  # [text_ctx, W] each


def grow_text_weights(source: dict[str, torch.Tensor], source_cfg: UNetConfig, target_cfg: UNetConfig,
                      own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text encoder's tensors of a larger word vocabulary and a longer context, from the source's.

    token_embedding [V, W]: the row of each source word moves to that word's id in the target vocabulary
    (padding stays id 0); a word the source never saw keeps its init. positional and padding embeddings
    [L, W]: positions 0 .. L0-2 are copied, the source's last position (whose output GLIDE pools) becomes
    the target's last, and the positions between keep their init. Returns only the tensors that changed.
    """
    same = all(getattr(source_cfg, k) == getattr(target_cfg, k) for k in TEXT_MAY_GROW)
    if same or not source_cfg.text_ctx:
        return {}
    names = (source_cfg.tokenizer, target_cfg.tokenizer)
    if any(name not in WORD_VOCABULARIES for name in names):
        raise CheckpointError(f"the tokenizer can change only between word-level vocabularies "
                              f"({', '.join(WORD_VOCABULARIES)}), not from {names[0]!r} to {names[1]!r}")
    old, new = (WordTokenizer(WORD_VOCABULARIES[name], 1) for name in names)
    missing = [w for w in old.vocab if w not in new.ids]
    if missing:
        raise CheckpointError(f"model.tokenizer {names[1]!r} lacks words the source model knows: {' '.join(missing)}")
    if target_cfg.text_ctx < source_cfg.text_ctx:
        raise CheckpointError(f"model.text_ctx can grow, not shrink: the source has {source_cfg.text_ctx}, this "
                              f"model {target_cfg.text_ctx}")
    grown = {TOKEN_EMBEDDING: own[TOKEN_EMBEDDING].clone()}
    for word, i in old.ids.items():
        grown[TOKEN_EMBEDDING][new.ids[word]] = source[TOKEN_EMBEDDING][i]
    for key in PER_POSITION:
        if key in own:
            grown[key] = own[key].clone()
            grown[key][:source_cfg.text_ctx - 1] = source[key][:-1]
            grown[key][-1] = source[key][-1]
    return grown


def transfer_weights(source: dict[str, torch.Tensor], source_cfg: UNetConfig, model: UNet) -> list[str]:
    """Copy a U-Net state dict (of source_cfg) into `model`, whose config may add inputs to the source's.

    The first conv's kernel [C_out, C_in, 3, 3] is copied input by input (x_t, inpaint_image,
    inpaint_mask, low_res: see input_channel_groups, which also moves the low-res channels to their
    place after the inpainting ones); inputs the source lacks get zero weights. The aug_level embedding,
    if the source lacks it, keeps its init (last layer zero). A word-level text encoder may gain words
    and context (grow_text_weights). Attention blocks at feature-map sizes the source had none keep their init
    (new_attention_blocks). Every other tensor is copied as is.
    Returns the names of the tensors that did not come entirely from the source.
    """
    target_cfg = model.cfg
    differ = [f.name for f in dataclasses.fields(UNetConfig)
              if f.name not in MAY_DIFFER and getattr(source_cfg, f.name) != getattr(target_cfg, f.name)]
    if differ:
        raise CheckpointError("cannot fine-tune across architectures: model." + ", model.".join(
            f"{k} is {getattr(source_cfg, k)!r} in the source but {getattr(target_cfg, k)!r} here" for k in differ))
    lost = sorted(set(source_cfg.attention_resolutions) - set(target_cfg.attention_resolutions))
    if lost:
        raise CheckpointError(f"model.attention_resolutions {list(target_cfg.attention_resolutions)} lacks the "
                              f"source's {lost}: fine-tuning can add attention, not remove it")
    dropped = [k for k in ADDED_INPUTS if getattr(source_cfg, k) and not getattr(target_cfg, k)]
    if dropped:
        raise CheckpointError(f"the source model has inputs this one lacks (model.{', model.'.join(dropped)}); "
                              "fine-tuning can add inputs, not remove them")
    own = model.state_dict()
    unexpected = sorted(set(source) - set(own))
    if unexpected:
        raise CheckpointError(f"the source has {len(unexpected)} tensors this model lacks, e.g. {unexpected[:3]}")
    old_groups, new_groups = input_channel_groups(source_cfg), input_channel_groups(target_cfg)
    grown = grow_text_weights(source, source_cfg, target_cfg, own)
    added = new_attention_blocks(model, source)
    state, fresh = {}, []
    for key, value in own.items():
        if key in grown:
            state[key] = grown[key].to(value.dtype)
            fresh.append(key)
        elif key == FIRST_CONV:
            kernel = torch.zeros_like(value)  # inputs the source never saw: zero weights, no effect at init
            for name, channels in old_groups.items():
                kernel[:, new_groups[name]] = source[key][:, channels].to(value.dtype)
            state[key] = kernel
            if len(new_groups) > len(old_groups):
                fresh.append(key)
        elif key in source:
            if source[key].shape != value.shape:
                raise CheckpointError(f"{key}: the source has shape {tuple(source[key].shape)}, this model "
                                      f"{tuple(value.shape)}")
            state[key] = source[key].to(value.dtype)
        elif key.startswith(NEW_MODULES) or key.startswith(added):
            state[key] = value
            fresh.append(key)
        else:
            raise CheckpointError(f"the source lacks {key}, which no added input explains")
    model.load_state_dict(state)
    return fresh


def new_attention_blocks(model: UNet, source: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The name prefixes ("output_blocks.9.1.") of model's attention blocks that have no tensor in source."""
    return tuple(f"{name}." for name, module in model.named_modules()
                 if isinstance(module, AttentionBlock) and not any(k.startswith(f"{name}.") for k in source))


def init_from_pretrained(model: UNet | NoisedCLIP, source: str | Path, root: Path | None = None) -> list[str]:
    """Start `model` from a shipped checkpoint (sha256-verified) or a .safetensors path: transfer_weights for
    a U-Net; a noised CLIP goes on from a CLIP of the same architecture (a second training stage).

    Returns the names of the tensors that did not come entirely from the source (the new inputs).
    """
    weights, config = pretrained.load_weights(source, root)
    task = "clip" if isinstance(model, NoisedCLIP) else "diffusion"
    source_task = config.get("kind") or config_from_dict(config).task
    if source_task != task:
        raise CheckpointError(f"train.init_from {str(source)!r} is a {source_task} checkpoint; this {task} model "
                              f"starts from a {task} checkpoint")
    source_cfg = config_from_dict(config)
    if task == "clip":
        return continue_clip(weights, source_cfg.clip, model)
    return transfer_weights(weights, source_cfg.model, model)


def continue_clip(source: dict[str, torch.Tensor], source_cfg: CLIPConfig, model: NoisedCLIP) -> list[str]:
    """Copy a noised CLIP's state dict into `model`, which must have the same architecture (fields with weights
    equal; the training-only ones, hard_negatives and noised, may differ). Returns [] (no new tensors)."""
    differ = [f.name for f in dataclasses.fields(CLIPConfig) if f.name not in CLIP_TRAINING_ONLY
              and getattr(source_cfg, f.name) != getattr(model.cfg, f.name)]
    if differ:
        raise CheckpointError("a CLIP goes on only from one of the same architecture: clip." + ", clip.".join(
            f"{k} is {getattr(source_cfg, k)!r} in the source but {getattr(model.cfg, k)!r} here" for k in differ))
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in source.items()})
    return []
