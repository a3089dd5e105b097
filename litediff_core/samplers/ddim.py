"""DDIM sampling (Song et al. 2021), a thin wrapper around diffusers' ``DDIMScheduler``.

``eta`` interpolates between the deterministic DDIM update (``eta=0``) and a DDPM-like
stochastic one (``eta=1``). As in diffusers, the x0 prediction is clipped (when the base config
clips) but the noise direction uses the raw model output, and the step from timestep ``t`` goes
to ``t - num_train_timesteps // steps``: with "trailing" spacing this is exactly the next
visited timestep whenever ``steps`` divides ``num_train_timesteps``.
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers import DDIMScheduler

from ..errors import LiteDiffError
from ._common import (SchedulerSampler, check_spacing, clip_setting, clip_text, draw_noise,
                      scheduler_kwargs)


class DDIMSampler(SchedulerSampler):
    """DDIM; deterministic for ``eta=0``, stochastic for ``0 < eta <= 1``."""

    name = "ddim"

    def __init__(self, scheduler_config: dict, eta: float = 0.0,
                 timestep_spacing: str = "trailing", clip_sample: Optional[bool] = None):
        if not 0.0 <= float(eta) <= 1.0:
            raise LiteDiffError(f"ddim: eta must be between 0 and 1, not {eta}")
        clip, clip_range = clip_setting(scheduler_config, clip_sample)
        self.config = {"eta": float(eta), "timestep_spacing": check_spacing(timestep_spacing),
                       "clip_sample": clip}
        self.scheduler = DDIMScheduler(**scheduler_kwargs(
            DDIMScheduler, scheduler_config, timestep_spacing=timestep_spacing, clip_sample=clip,
            clip_sample_range=clip_range))
        self.num_train_timesteps = self.scheduler.config.num_train_timesteps
        self.eta = float(eta)
        self.stochastic = self.eta > 0

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator=None) -> torch.Tensor:
        """x_t -> x_prev. For ``eta > 0`` the noise is drawn from ``generator`` (one CPU
        generator per image, or one for the batch) and passed as ``variance_noise``."""
        noise = draw_noise(generator, sample) if self.stochastic else None
        return self.scheduler.step(model_output, timestep, sample, eta=self.eta,
                                   variance_noise=noise).prev_sample

    def describe(self) -> dict:
        c = self.scheduler.config
        clipping = clip_text(c.clip_sample, c.clip_sample_range, c.thresholding)
        return {
            "sampler": self.name,
            "scheduler": "diffusers.DDIMScheduler",
            "timestep_spacing": c.timestep_spacing,
            "clipping": clipping,
            "stochastic": self.stochastic,
            "eta": self.eta,
            "summary": f"DDIM, eta={self.eta:g}, {c.timestep_spacing} timestep spacing, "
                       f"{clipping} (noise direction from the unclipped model output)",
        }
