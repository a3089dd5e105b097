"""DDPM ancestral sampling (Ho et al. 2020), a thin wrapper around diffusers' ``DDPMScheduler``.

With fewer steps than training timesteps, diffusers steps from each visited timestep straight to
the next visited one, using the posterior q(x_prev | x_t, x0) of that jump (variance as in the
base config, normally ``fixed_small``).
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers import DDPMScheduler

from ._common import SchedulerSampler, check_spacing, clip_setting, clip_text, scheduler_kwargs


class DDPMSampler(SchedulerSampler):
    """Ancestral DDPM sampling; stochastic (fresh noise at every step but the last)."""

    name = "ddpm"

    def __init__(self, scheduler_config: dict, timestep_spacing: str = "trailing",
                 clip_sample: Optional[bool] = None):
        clip, clip_range = clip_setting(scheduler_config, clip_sample)
        self.config = {"timestep_spacing": check_spacing(timestep_spacing), "clip_sample": clip}
        self.scheduler = DDPMScheduler(**scheduler_kwargs(
            DDPMScheduler, scheduler_config, timestep_spacing=timestep_spacing, clip_sample=clip,
            clip_sample_range=clip_range))
        self.num_train_timesteps = self.scheduler.config.num_train_timesteps
        self.stochastic = True

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator=None) -> torch.Tensor:
        """x_t -> x_prev. ``generator``: one CPU generator per image (or one for the batch)."""
        return self.scheduler.step(model_output, timestep, sample, generator=generator).prev_sample

    def describe(self) -> dict:
        c = self.scheduler.config
        return {
            "sampler": self.name,
            "scheduler": "diffusers.DDPMScheduler",
            "timestep_spacing": c.timestep_spacing,
            "clipping": clip_text(c.clip_sample, c.clip_sample_range, c.thresholding),
            "stochastic": True,
            "summary": f"DDPM ancestral sampling, variance {c.variance_type}, "
                       f"{c.timestep_spacing} timestep spacing, "
                       f"{clip_text(c.clip_sample, c.clip_sample_range, c.thresholding)}",
        }
