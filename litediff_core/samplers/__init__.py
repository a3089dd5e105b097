"""Samplers for DDPM-trained UNets, and :func:`generate`, the one way LiteDiff draws images.

Every sampler is built from the base model's DDPM scheduler config (``scheduler.config``) and
shares one small interface, diffusers style::

    s = SAMPLERS[name](scheduler_config, **kwargs)   # kwargs recorded in s.config
    s.set_timesteps(steps)                           # also resets any per-run state
    for t in s.timesteps:
        x = s.step(unet(x, t).sample, t, x, generator=per_image_generators)
    s.describe()                                     # spacing, clipping, hyper-parameters

All samplers use the same timestep spacing ("trailing" by default) and, when the base config
clips, the same clipping of the x0 prediction to [-1, 1].

Fair comparisons: :func:`initial_noise` gives the same starting noise for a seed whatever the
sampler or model (of that shape), and stochastic samplers draw image ``i``'s step noise from its
own generator seeded from ``(seed, i)``, so results do not depend on ``batch_size``.
"""

from __future__ import annotations

import inspect
from typing import Optional, Union

import torch

from ..errors import LiteDiffError
from ..progress import Progress, report
from ._common import step_generators
from .ams import AMSSampler
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .dpm_solver import DPMSolverPPSampler

SAMPLERS = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "dpm-solver++": DPMSolverPPSampler,
    "ams": AMSSampler,
}

__all__ = ["SAMPLERS", "AMSSampler", "DDIMSampler", "DDPMSampler", "DPMSolverPPSampler",
           "make_sampler", "initial_noise", "generate", "grid"]


def make_sampler(name: str, scheduler_config: dict, **sampler_kwargs):
    """``SAMPLERS[name](scheduler_config, **sampler_kwargs)`` with user-facing errors."""
    if name not in SAMPLERS:
        raise LiteDiffError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    cls = SAMPLERS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in ("self", "scheduler_config")]
    unknown = sorted(set(sampler_kwargs) - set(accepted))
    if unknown:
        raise LiteDiffError(f"sampler {name!r} does not take {', '.join(unknown)}; "
                            f"it takes {', '.join(accepted)}")
    return cls(dict(scheduler_config), **sampler_kwargs)


def initial_noise(n: int, shape: tuple, seed: int) -> torch.Tensor:
    """The starting noise of a run: one ``randn`` of ``n×C×H×W`` from a CPU generator seeded
    with ``seed`` (the same call as diffusers' pipelines make with such a generator)."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn((int(n), *shape), generator=generator)


def _image_shape(unet) -> tuple:
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(unet.config.in_channels), int(h), int(w)


def generate(unet, scheduler_config: dict, sampler: str = "ddim", steps: int = 50, n: int = 16,
             seed: int = 0, batch_size: int = 64, device: Union[str, torch.device] = "cpu",
             progress: Optional[Progress] = None, **sampler_kwargs) -> torch.Tensor:
    """Draw ``n`` images with ``sampler`` in ``steps`` steps: float ``n×C×H×W`` in [-1, 1], on
    the CPU. ``unet`` (a diffusers ``UNet2DModel``, put in eval mode) must already be on
    ``device``; the result depends on ``seed`` but not on ``batch_size``."""
    s = make_sampler(sampler, scheduler_config, **sampler_kwargs)
    s.set_timesteps(steps)  # validates steps before any work
    if int(n) < 1 or int(batch_size) < 1:
        raise LiteDiffError(f"n and batch_size must be at least 1 (got n={n}, "
                            f"batch_size={batch_size})")
    n, batch_size = int(n), int(batch_size)
    unet.eval()
    noise = initial_noise(n, _image_shape(unet), seed)
    out = torch.empty_like(noise)
    batches = range(0, n, batch_size)
    total, done = len(batches) * len(s.timesteps), 0
    with torch.no_grad():
        for b, start in enumerate(batches):
            stop = min(start + batch_size, n)
            x = noise[start:stop].to(device)
            generators = step_generators(seed, range(start, stop)) if s.stochastic else None
            s.set_timesteps(steps)
            if callable(getattr(unet, "reset_cache", None)):
                unet.reset_cache()  # feature caching (DeepCache): one trajectory per batch
            for t in s.timesteps:
                eps = unet(x, t).sample
                x = s.step(eps, t, x, generator=generators)
                done += 1
                report(progress, done, total, f"{sampler}, batch {b + 1}/{len(batches)}")
            out[start:stop] = x.clamp(-1, 1).float().cpu()
    return out


def grid(images: torch.Tensor, nrow: int = 8):
    """A PIL image of ``images`` (float in [-1, 1], N×C×H×W) in a grid of ``nrow`` columns;
    1-channel images give a grayscale ("L") image, 3-channel ones RGB."""
    from PIL import Image
    from torchvision.utils import make_grid

    from ..data.datasets import to_uint8

    images = images.detach().float().cpu()
    g = to_uint8(make_grid(images.clamp(-1, 1), nrow=nrow, padding=2, pad_value=-1.0))
    if images.shape[1] == 1:
        return Image.fromarray(g[0].numpy())
    return Image.fromarray(g.permute(1, 2, 0).contiguous().numpy())
