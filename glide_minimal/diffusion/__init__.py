"""Diffusion: schedules, the Gaussian process and its losses, samplers, guidance. Knows nothing about networks."""
from . import guidance
from .gaussian import GaussianDiffusion
from .sampling import Trajectory, ddim_sample_loop, dpm_solver_sample_loop, dpm_solver_step, p_sample_loop
from .schedule import get_named_beta_schedule, space_timesteps

__all__ = ["GaussianDiffusion", "guidance", "Trajectory", "ddim_sample_loop", "dpm_solver_sample_loop",
           "dpm_solver_step", "get_named_beta_schedule", "p_sample_loop", "space_timesteps"]
