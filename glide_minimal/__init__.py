"""glide-minimal: GLIDE (Nichol et al. 2021) from scratch, small enough to read and train on a laptop."""
from . import (
    captions,
    diffusion,
    evaluators,
    imagetext,
    masks,
    metrics,
    models,
    pipelines,
    pretrained,
    shapesworld,
    speed,
    viz,
    vocabulary,
)
from .checkpoint import CheckpointError
from .config import Config, available_configs, load_config
from .datasets import load_digits, load_photo, load_shapesworld
from .diffusion import GaussianDiffusion
from .evaluators import load_evaluator
from .imagetext import load_folder
from .models import UNet, build_model
from .pipelines import ClassPipeline, DiffusionPipeline, InpaintPipeline, TextPipeline, UpsamplePipeline, load_pipeline
from .tier import Tier, tier
from .train import Trainer, TrainingDiverged

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ClassPipeline", "Config", "DiffusionPipeline", "GaussianDiffusion", "InpaintPipeline",
           "TextPipeline", "Tier", "Trainer", "TrainingDiverged", "UNet", "UpsamplePipeline", "available_configs",
           "build_model", "captions", "diffusion", "evaluators", "imagetext", "load_config", "load_digits",
           "load_evaluator", "load_folder", "load_photo", "load_pipeline", "load_shapesworld", "masks", "metrics",
           "models", "pipelines", "pretrained", "shapesworld", "speed", "tier", "viz", "vocabulary"]
