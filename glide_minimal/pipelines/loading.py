"""gm.load_pipeline: a shipped (or user-published) checkpoint in, the pipeline of its kind out.

A model's companions (its upsampler, noised CLIP, classifier, inpainting pair) are named in its MANIFEST
entry ("companions": {role: checkpoint name}), never inferred from names; each is loaded on first use.
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import pretrained
from ..checkpoint import CheckpointError
from ..checks import check_device, default_device
from .base import Companion, DiffusionPipeline
from .classes import ClassPipeline
from .inpaint import InpaintPipeline
from .text import TextPipeline
from .upsample import UpsamplePipeline

# Pipelines named after what they do rather than after one checkpoint: the editing pipeline of chapter 7 is
# the inpainting group of a text model (alias -> that text model; its MANIFEST entry names the group).
INPAINT_GROUPS = {"tutorial-inpaint": "tutorial-text", "tutorial-inpaint-gpu": "tutorial-text-gpu"}
Resolve = Callable[[str], str]  # a companion's checkpoint name -> the name to load (made to exist)


def missing(name: str, what: str) -> CheckpointError:
    return CheckpointError(f"this needs {what}: the checkpoint {name!r}, which is not in any of the places searched "
                           f"(scripts/train_ch*.sh train and publish the book's); {pretrained.looked_in()}")


def load_stage(name: str, role: str, device: torch.device) -> DiffusionPipeline:
    """The checkpoint `name` as the pipeline of an inpainting group's stage `role` (InpaintPipeline.ROLES);
    clear errors if it is not shipped or is the wrong kind of model."""
    what, super_res, inpaint = InpaintPipeline.ROLES[role]
    if name not in pretrained.available():
        raise missing(name, what)
    model, cfg = pretrained.load_model(name, device)
    flags = {"super_res": super_res, "inpaint": inpaint}
    wrong = [k for k, v in flags.items() if getattr(cfg.model, k) != v]
    if wrong or not cfg.model.text_ctx:
        raise CheckpointError(f"{name!r} should be {what} with text conditioning, but its config has "
                              + ", ".join(f"model.{k} = {getattr(cfg.model, k)}" for k in [*wrong, "text_ctx"]))
    return UpsamplePipeline(model, cfg, device) if cfg.model.super_res else TextPipeline(model, cfg, device)


def same(name: str) -> str:
    return name


def companion(name: str, role: str, load, what: str, resolve: Resolve = same) -> Companion:
    """The companion `role` of checkpoint `name` (from its MANIFEST entry), loaded by load(resolve(companion
    name)) on first use; a Companion that explains what is missing otherwise."""
    other = pretrained.companions(name).get(role)
    if other is None:
        return Companion(missing=f"{what}, and the MANIFEST entry of {name!r} names no {role!r} companion")
    return Companion(load=lambda: load(resolve(other)), missing=f"{what}: {other!r}")


def group_stage(text_name: str, role: str, device: torch.device, resolve: Resolve = same) -> DiffusionPipeline:
    """Stage `role` of the inpainting group of text model `text_name`, as its MANIFEST entry names it."""
    if text_name not in pretrained.available():
        raise missing(text_name, "the text model whose MANIFEST entry names this inpainting group")
    name = text_name if role == "text" else pretrained.companions(text_name).get(role)
    if name is None:
        raise CheckpointError(f"the MANIFEST entry of {text_name!r} names no {role!r} companion "
                              f"({InpaintPipeline.ROLES[role][0]})")
    return load_stage(resolve(name), role, device)


def inpaint_group(text_name: str, device: torch.device, resolve: Resolve = same, **given) -> InpaintPipeline:
    """The InpaintPipeline of the text model `text_name`; the stages not `given` load on first use."""
    arguments = {"inpaint": "base", "upsample-inpaint": "upsampler", "text": "text", "upsample": "text_upsampler"}
    stages = {argument: given.get(argument) or Companion(
        load=lambda role=role: group_stage(text_name, role, device, resolve)) for role, argument in arguments.items()}
    return InpaintPipeline(**stages, device=device)


def load_pipeline(name: str, device: str | torch.device | None = None, resolve: Resolve = same):
    """A pipeline over a checkpoint of the store (see `gm.pretrained.available()`); no network.

    A text checkpoint gives a TextPipeline whose upsample=True uses its "upsample" companion and whose CLIP
    guidance uses its "clip" companion; an upsampler gives an UpsamplePipeline; a class-conditional model a
    ClassPipeline (its "classifier" companion for classifier guidance); an inpainting checkpoint (or the
    alias "tutorial-inpaint") the InpaintPipeline of its text model's group. `resolve(name)` is called on each
    companion's name before it loads (gm.tier() passes one that trains a missing GPU-tier model).
    """
    device = check_device(device) if device is not None else default_device()
    if name in INPAINT_GROUPS:  # method="replace" needs only the text model and its upsampler
        text_name = resolve(INPAINT_GROUPS[name])
        if text_name not in pretrained.available():
            raise missing(text_name, f"the text model whose MANIFEST entry names the {name!r} group")
        return inpaint_group(text_name, device, resolve)
    model, cfg = pretrained.load_model(name, device)
    if cfg.task != "diffusion":
        pipelines = [n for n in pretrained.available() if pretrained.entry(n).get("kind") == "diffusion"]
        raise ValueError(f"{name!r} is a {cfg.task} checkpoint, not a diffusion model; pipelines: "
                         f"{', '.join(pipelines)}")
    if cfg.model.inpaint:
        text_name = pretrained.companions(name).get("text")
        if text_name is None:
            raise CheckpointError(f"{name!r} is an inpainting model, but its MANIFEST entry names no 'text' "
                                  "companion (the text model whose group it belongs to)")
        stage = UpsamplePipeline(model, cfg, device) if cfg.model.super_res else TextPipeline(model, cfg, device)
        return inpaint_group(resolve(text_name), device, resolve,
                             **{"upsampler" if cfg.model.super_res else "base": stage})
    if cfg.model.super_res:
        return UpsamplePipeline(model, cfg, device)
    if cfg.model.num_classes:
        load = lambda other: pretrained.load_model(other, device)[0]  # noqa: E731
        return ClassPipeline(model, cfg, device, classifier=companion(
            name, "classifier", load, "method='classifier' needs a noised classifier", resolve))
    if cfg.model.text_ctx:
        clip = companion(name, "clip", lambda other: pretrained.load_model(other, device)[0],
                         "guidance='clip' needs a noised CLIP checkpoint", resolve)
        upsampler = companion(name, "upsample", lambda other: load_stage(other, "upsample", device),
                              "upsample=True needs an upsampler", resolve)
        return TextPipeline(model, cfg, device, clip=clip, upsampler=upsampler)
    return DiffusionPipeline(model, cfg, device)
