"""Small helpers shared by the sampler files (which never import each other).

* :func:`scheduler_kwargs` turns a base model's DDPM scheduler config (``scheduler.config``, a
  dict) into keyword arguments for another diffusers scheduler class, keeping only the keys
  that class accepts (so private keys such as ``_class_name`` and DDPM-only keys such as
  ``variance_type`` never reach, say, ``DDIMScheduler``).
* :func:`step_generators` / :func:`draw_noise` make per-step noise independent of the batch
  size: image ``i`` of a run with seed ``s`` owns one CPU ``torch.Generator`` seeded from
  ``(s, i)``, and every stochastic step draws that image's noise from it.
"""

from __future__ import annotations

import inspect
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..errors import LiteDiffError

TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")

Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def scheduler_kwargs(cls, scheduler_config: dict, **overrides) -> dict:
    """``scheduler_config`` filtered to ``cls.__init__``'s parameters, then ``overrides``."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in dict(scheduler_config).items() if k in accepted}
    kwargs.update(overrides)
    return kwargs


def check_spacing(timestep_spacing: str) -> str:
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise LiteDiffError(f"unknown timestep_spacing {timestep_spacing!r}; "
                            f"choose one of {', '.join(TIMESTEP_SPACINGS)}")
    return timestep_spacing


def check_steps(steps: int, num_train_timesteps: int) -> int:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool):
        raise LiteDiffError(f"steps must be an integer, not {steps!r}")
    if not 1 <= steps <= num_train_timesteps:
        raise LiteDiffError(f"steps must be between 1 and {num_train_timesteps} (the model's "
                            f"training timesteps), not {steps}")
    return int(steps)


def clip_setting(scheduler_config: dict, clip_sample: Optional[bool]) -> tuple[bool, float]:
    """(clip?, range): ``clip_sample=None`` keeps what the base model's config says."""
    config = dict(scheduler_config)
    clip = bool(config.get("clip_sample", True)) if clip_sample is None else bool(clip_sample)
    return clip, float(config.get("clip_sample_range", 1.0))


def clip_text(clip: bool, clip_range: float, thresholding: bool = False) -> str:
    if thresholding:
        return "x0 prediction dynamically thresholded (base config has thresholding=True)"
    return f"x0 prediction clipped to [-{clip_range:g}, {clip_range:g}]" if clip else \
        "x0 prediction not clipped"


def derived_seed(seed: int, index: int) -> int:
    """A 63-bit seed for image ``index`` of a run seeded with ``seed`` (stream distinct from the
    initial noise, which uses ``seed`` itself)."""
    sequence = np.random.SeedSequence([int(seed) % 2**64, 0x5EED, int(index)])
    state = sequence.generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def step_generators(seed: int, indices: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image (global image indices), for the per-step noise."""
    return [torch.Generator("cpu").manual_seed(derived_seed(seed, i)) for i in indices]


def draw_noise(generator: Generators, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``like``: one draw per image from a list of per-image
    generators (diffusers' convention for lists), or one draw from a single generator / the
    global RNG."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != like.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {like.shape[0]}")
        noise = torch.cat([torch.randn((1, *like.shape[1:]), generator=g, dtype=torch.float32)
                           for g in generator])
    else:
        noise = torch.randn(like.shape, generator=generator, dtype=torch.float32)
    return noise.to(device=like.device, dtype=like.dtype)


class SchedulerSampler:
    """Shared by the samplers that wrap one diffusers scheduler (``self.scheduler``, with
    ``self.num_train_timesteps`` set by the subclass)."""

    @property
    def timesteps(self) -> torch.Tensor:
        return self.scheduler.timesteps

    def set_timesteps(self, steps: int) -> None:
        """Set the sampling timesteps; resets the scheduler's per-run state (once per batch)."""
        self.scheduler.set_timesteps(check_steps(steps, self.num_train_timesteps))
