"""DPM-Solver++ multistep (Lu et al. 2022), a thin wrapper around diffusers'
``DPMSolverMultistepScheduler`` with ``algorithm_type="dpmsolver++"`` (deterministic).

Clipping: diffusers' DPM-Solver has no ``clip_sample``; it only knows dynamic thresholding.
With ``thresholding=True`` and ``sample_max_value=1`` that thresholding is exactly clipping of
the x0 prediction to [-1, 1] (the per-image threshold ``s`` is clamped to [1, 1]), so this
wrapper clips like the DDPM and DDIM samplers do (when the base config clips). Clipping to any
other range is not available here. The last step goes to sigma 0 (``final_sigmas_type="zero"``)
and, below 15 steps, drops to first order (diffusers' ``lower_order_final``).
"""

from __future__ import annotations

from typing import Optional

import torch
from diffusers import DPMSolverMultistepScheduler

from ..errors import LiteDiffError
from ._common import SchedulerSampler, check_spacing, clip_setting, clip_text, scheduler_kwargs


class DPMSolverPPSampler(SchedulerSampler):
    """DPM-Solver++ multistep of order ``order`` (1-3, default 2); deterministic."""

    name = "dpm-solver++"

    def __init__(self, scheduler_config: dict, order: int = 2,
                 timestep_spacing: str = "trailing", clip_sample: Optional[bool] = None):
        if order not in (1, 2, 3):
            raise LiteDiffError(f"dpm-solver++: order must be 1, 2 or 3, not {order!r}")
        clip, clip_range = clip_setting(scheduler_config, clip_sample)
        thresholding = bool(dict(scheduler_config).get("thresholding", False))
        overrides = {}
        if clip and not thresholding:
            if clip_range != 1.0:
                raise LiteDiffError(f"dpm-solver++ can only clip to [-1, 1], not to "
                                    f"[-{clip_range:g}, {clip_range:g}]; pass clip_sample=False")
            overrides = {"thresholding": True, "sample_max_value": 1.0}
        self.config = {"order": order, "timestep_spacing": check_spacing(timestep_spacing),
                       "clip_sample": clip}
        self.scheduler = DPMSolverMultistepScheduler(**scheduler_kwargs(
            DPMSolverMultistepScheduler, scheduler_config, algorithm_type="dpmsolver++",
            solver_order=order, timestep_spacing=timestep_spacing, final_sigmas_type="zero",
            **overrides))
        self.num_train_timesteps = self.scheduler.config.num_train_timesteps
        self.stochastic = False
        self._clipping = clip_text(clip, 1.0, thresholding)
        self._clip_by_thresholding = bool(overrides)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator=None) -> torch.Tensor:
        """x_t -> x_prev; ``generator`` is accepted for the common interface and unused."""
        return self.scheduler.step(model_output, timestep, sample).prev_sample

    def describe(self) -> dict:
        c = self.scheduler.config
        how = " (as thresholding with sample_max_value=1)" if self._clip_by_thresholding else ""
        return {
            "sampler": self.name,
            "scheduler": "diffusers.DPMSolverMultistepScheduler (dpmsolver++)",
            "timestep_spacing": c.timestep_spacing,
            "clipping": self._clipping,
            "stochastic": False,
            "order": c.solver_order,
            "summary": f"DPM-Solver++ multistep, order {c.solver_order}, {c.timestep_spacing} "
                       f"timestep spacing, {self._clipping}{how}",
        }
