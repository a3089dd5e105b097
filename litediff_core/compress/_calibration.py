"""Timestep-aware calibration inputs for post-training quantization of a diffusion UNet.

As in Q-Diffusion (Li et al. 2023) and PTQ4DM (Shang et al. 2023): activations of a diffusion
UNet change a lot along the sampling trajectory, so calibration inputs must come from every part
of it, not from one timestep nor from noised training images. :func:`calibration_inputs` runs a
sampler of :mod:`litediff_core.samplers` (DDIM by default) with the full-precision model from fixed
noise (:func:`~litediff_core.samplers.initial_noise` of ``seed``) and records the UNet's input
``(x_t, t)`` at sampling steps 0, c, 2c, ... (every ``every``-th step); sampling stops after the
last recorded step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from .._lazy import no_grad, torch
from ..errors import LiteDiffError
from ..progress import Progress, report


@dataclass(frozen=True)
class CalibrationBatch:
    sample: torch.Tensor  # n×C×H×W float32, on the CPU: the UNet input x_t
    timestep: int         # the timestep t the UNet was called with
    step: int             # index of the sampling step (0 = first, from pure noise)

    def timesteps(self) -> torch.Tensor:
        """``t`` repeated for the batch (the UNet's ``timestep`` argument)."""
        return torch.full((self.sample.shape[0],), self.timestep, dtype=torch.long)


def recorded_steps(steps: int, every: int) -> List[int]:
    """Indices of the sampling steps whose inputs are recorded: 0, every, 2·every, ... < steps."""
    return list(range(0, int(steps), int(every)))


def check_calibration(who: str, images: int, steps: int, every: int) -> None:
    if images < 1 or steps < 1 or every < 1:
        raise LiteDiffError(f"{who}: calib_images, calib_steps and calib_every must be at least 1")


@no_grad
def calibration_inputs(unet, scheduler_config: dict, images: int = 32, steps: int = 50,
                       every: int = 5, sampler: str = "ddim", seed: int = 0,
                       progress: Optional[Progress] = None,
                       who: str = "calibration") -> List[CalibrationBatch]:
    """UNet inputs along a sampling trajectory of ``images`` images, one batch per recorded step
    (``len(recorded_steps(steps, every))`` batches of ``images`` samples)."""
    from ..samplers import _image_shape, initial_noise, make_sampler
    from ..samplers._common import step_generators

    check_calibration(who, images, steps, every)
    s = make_sampler(sampler, scheduler_config)
    s.set_timesteps(int(steps))
    keep = set(recorded_steps(len(s.timesteps), every))
    last = max(keep)
    first = next(unet.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = initial_noise(images, _image_shape(unet), seed).to(device)
    generators = step_generators(seed, range(images)) if s.stochastic else None
    out: List[CalibrationBatch] = []
    training = unet.training
    unet.eval()
    try:
        for i, t in enumerate(s.timesteps):
            if i in keep:
                out.append(CalibrationBatch(x.detach().float().cpu().clone(), int(t), i))
            if i == last:
                break
            x = s.step(unet(x, t).sample, t, x, generator=generators)
            report(progress, i + 1, last, f"{who}: sampling step {i + 1}/{last}")
    finally:
        unet.train(training)
    return out
