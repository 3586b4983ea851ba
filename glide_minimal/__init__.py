"""glide-minimal: GLIDE (Nichol et al. 2021) from scratch, small enough to read and train on a laptop."""
from . import diffusion, metrics, models, pretrained, shapesworld, viz
from .checkpoint import CheckpointError
from .config import Config, available_configs, load_config
from .datasets import load_digits, load_photo, load_shapesworld
from .diffusion import GaussianDiffusion
from .models import UNet, build_model
from .pipeline import (ClassPipeline, DiffusionPipeline, InpaintPipeline, TextPipeline, UpsamplePipeline,
                       load_pipeline)
from .train import Trainer, TrainingDiverged

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ClassPipeline", "Config", "DiffusionPipeline", "GaussianDiffusion", "InpaintPipeline",
           "TextPipeline", "Trainer", "TrainingDiverged", "UNet", "UpsamplePipeline", "available_configs", "build_model",
           "diffusion", "load_config", "load_digits", "load_photo", "load_pipeline", "load_shapesworld", "metrics",
           "models", "pretrained", "shapesworld", "viz"]
