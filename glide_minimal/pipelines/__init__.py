"""User-facing pipelines: a checkpoint in, images in [0, 1] out.

    base.py      DiffusionPipeline (chapter 1), to_unit, Companion
    classes.py   ClassPipeline: classifier-free and classifier guidance (chapters 2-3)
    text.py      TextPipeline: CFG and CLIP guidance (chapters 4-5), and the cascade (upsample=True, chapter 6)
    upsample.py  UpsamplePipeline: the cascade's second stage (chapter 6)
    inpaint.py   InpaintPipeline: editing through the cascade (chapter 7)
    loading.py   load_pipeline: the store's checkpoints and the companions their MANIFEST entries name
"""
from .base import Companion, DiffusionPipeline, check_unit_range, to_unit
from .classes import ClassPipeline
from .inpaint import InpaintPipeline
from .loading import INPAINT_GROUPS, load_pipeline
from .text import TextPipeline, get_clip_tokens
from .upsample import UpsamplePipeline

__all__ = ["INPAINT_GROUPS", "ClassPipeline", "Companion", "DiffusionPipeline", "InpaintPipeline", "TextPipeline",
           "UpsamplePipeline", "check_unit_range", "get_clip_tokens", "load_pipeline", "to_unit"]
