"""How closely a compressed student follows its teacher.

* :func:`ssim_psnr` compares images drawn from the same noise (same seed, sampler and steps), with
  torchmetrics' SSIM (Gaussian window 11, σ 1.5, k1 0.01, k2 0.03) and PSNR.
* :func:`eps_mse_by_timestep` compares the two networks' predictions on the same noisy inputs,
  bucketed by timestep: where along the trajectory the student departs from the teacher.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import pandas as pd
import torch

from ..data.datasets import ImageDataset, to_float
from ..errors import MetricError
from ..progress import Progress, report


def _to_unit_range(x: torch.Tensor, what: str) -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1] (clamped) images to float64 [0, 1]."""
    if x.dim() != 4:
        raise MetricError(f"{what}: expected N×C×H×W images, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.double() / 255.0
    if not x.is_floating_point():
        raise MetricError(f"{what}: expected uint8 or float images in [-1, 1], got {x.dtype}")
    return (x.double().clamp(-1, 1) + 1) / 2


def ssim_psnr(images_a: torch.Tensor, images_b: torch.Tensor) -> dict:
    """Per-image SSIM and PSNR between two aligned image sets (uint8, or float in [-1, 1]; the two
    may differ in type). Images are mapped to [0, 1] and compared with ``data_range=1.0``
    (equivalent to 255 on uint8). PSNR of identical images is ``inf`` (not capped), and so is the
    mean PSNR when any pair is identical. SSIM needs images of at least 11×11 pixels.

    Returns ``ssim_mean, ssim_std, psnr_mean, psnr_std, n, data_range`` and per-image numpy
    arrays ``ssim`` and ``psnr``.
    """
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    a, b = _to_unit_range(images_a.cpu(), "images_a"), _to_unit_range(images_b.cpu(), "images_b")
    if a.shape != b.shape:
        raise MetricError(f"cannot compare images of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < 11:
        raise MetricError(f"SSIM needs images of at least 11×11 pixels, got {tuple(a.shape[-2:])}")
    ssim = structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim, psnr = ssim.numpy(), psnr.numpy()
    with np.errstate(invalid="ignore"):  # std of inf values is nan, as it should be
        return {
            "ssim_mean": float(ssim.mean()), "ssim_std": float(ssim.std()),
            "psnr_mean": float(psnr.mean()), "psnr_std": float(psnr.std()),
            "n": int(a.shape[0]), "data_range": 1.0,
            "ssim": ssim, "psnr": psnr,
        }


def _prediction(model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The model's output tensor on its own device; diffusers outputs and tuples unwrapped."""
    first = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    device = first.device if first is not None else x.device
    dtype = first.dtype if first is not None and first.is_floating_point() else x.dtype
    out = model(x.to(device, dtype), t.to(device))
    out = getattr(out, "sample", out)
    out = out[0] if isinstance(out, (tuple, list)) else out
    return out.float().cpu()


def _clean_images(data) -> torch.Tensor:
    """Float [-1, 1] images from an ImageDataset, uint8 images or float images in [-1, 1]."""
    x = data.uint8 if isinstance(data, ImageDataset) else data
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise MetricError("eps_mse_by_timestep needs N×C×H×W images (uint8, float or ImageDataset)")
    return to_float(x) if x.dtype == torch.uint8 else x.float()


def eps_mse_by_timestep(teacher, student, data: Union[torch.Tensor, ImageDataset], scheduler,
                        n: int = 256, buckets: int = 10, seed: int = 0, batch_size: int = 64,
                        progress: Optional[Progress] = None) -> pd.DataFrame:
    """Mean squared difference between the teacher's and the student's predictions (ε for the
    usual ε-prediction models), with timesteps stratified into ``buckets`` equal ranges.

    ``scheduler``: a diffusers scheduler (its ``add_noise``) or a DDPM scheduler config dict.
    ``n`` clean images are drawn from ``data`` (with replacement when ``n`` > len), each gets a
    timestep drawn uniformly inside bucket ``i mod buckets`` and Gaussian noise; both models see
    the same ``x_t = scheduler.add_noise(x_0, noise, t)`` and ``t`` (seeded: reproducible).
    Both models run in eval mode (their mode is restored afterwards).

    Columns: ``bucket``, ``t_lo``, ``t_hi`` (inclusive), ``n``, ``mse`` (student vs teacher), and
    for scale ``teacher_noise_mse`` / ``student_noise_mse`` (each model's prediction vs the true
    noise; meaningful for ε-prediction).
    """
    if isinstance(scheduler, dict):
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(**scheduler)
    T = int(scheduler.config.num_train_timesteps)
    if not 1 <= buckets <= T or n < buckets or batch_size < 1:
        raise MetricError(f"eps_mse_by_timestep needs 1 ≤ buckets ≤ {T}, n ≥ buckets and batch_size ≥ 1")
    clean = _clean_images(data)
    edges = np.linspace(0, T, buckets + 1).round().astype(int)

    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, clean.shape[0], (n,), generator=g)
    bucket = torch.arange(n) % buckets
    lo, hi = torch.from_numpy(edges[:-1])[bucket], torch.from_numpy(edges[1:])[bucket]
    t = lo + (torch.rand(n, generator=g) * (hi - lo)).long()
    noise = torch.randn((n,) + tuple(clean.shape[1:]), generator=g)

    modes = [(m, m.training) for m in (teacher, student) if isinstance(m, torch.nn.Module)]
    for m, _ in modes:
        m.eval()
    mse, teacher_err, student_err = (torch.empty(n) for _ in range(3))
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                sl = slice(start, start + batch_size)
                x_t = scheduler.add_noise(clean[index[sl]], noise[sl], t[sl])
                pt, ps = _prediction(teacher, x_t, t[sl]), _prediction(student, x_t, t[sl])
                mse[sl] = (pt - ps).pow(2).flatten(1).mean(1)
                teacher_err[sl] = (pt - noise[sl]).pow(2).flatten(1).mean(1)
                student_err[sl] = (ps - noise[sl]).pow(2).flatten(1).mean(1)
                report(progress, min(start + batch_size, n), n, "teacher vs student predictions")
    finally:
        for m, training in modes:
            m.train(training)

    rows = []
    for b in range(buckets):
        sel = bucket == b
        rows.append({
            "bucket": b, "t_lo": int(edges[b]), "t_hi": int(edges[b + 1]) - 1, "n": int(sel.sum()),
            "mse": float(mse[sel].mean()),
            "teacher_noise_mse": float(teacher_err[sel].mean()),
            "student_noise_mse": float(student_err[sel].mean()),
        })
    return pd.DataFrame(rows)
