"""Real speed: the wall-clock time of one denoising step, and sampling throughput.

Measure, never infer from MACs: on CPU a model with half the MACs is often not twice as fast.
Timings depend on everything else running on the machine; compare models in one session, with
the same batch size, device and thread count (all recorded in the result).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..device import cpu_info
from ..errors import MetricError


@contextmanager
def _threads(threads: Optional[int]):
    """Run with ``threads`` intra-op CPU threads (unchanged when None), then restore."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@contextmanager
def _on_device_in_eval(model, device: torch.device):
    """Move an ``nn.Module`` to ``device`` in eval mode for the measurement, then put it back."""
    if not isinstance(model, nn.Module):
        yield model
        return
    first = next(model.parameters(), None)
    home = first.device if first is not None else torch.device("cpu")
    training = model.training
    model.to(device).eval()
    try:
        yield model
    finally:
        model.to(home).train(training)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _input_dtype(model) -> torch.dtype:
    first = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    return first.dtype if first is not None and first.is_floating_point() else torch.float32


def _sample_shape(unet, sample_shape: Optional[Sequence[int]]):
    if sample_shape is not None:
        return tuple(sample_shape)
    config = getattr(unet, "config", None)
    if config is None or "in_channels" not in config:
        raise MetricError(f"{type(unet).__name__} has no diffusers config: pass sample_shape=(C, H, W)")
    size = config["sample_size"]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return config["in_channels"], h, w


def step_latency(unet, batch_size: int = 16, device: str = "cpu", repeats: int = 10,
                 warmup: int = 3, threads: Optional[int] = None,
                 sample_shape: Optional[Sequence[int]] = None, seed: int = 0) -> dict:
    """Wall-clock seconds of one UNet forward (one denoising step) on a batch.

    ``unet(sample, timestep)`` is called ``warmup`` times untimed, then ``repeats`` times timed
    (CUDA synchronised before and after each call). Returns the median and 10th/90th percentiles
    in seconds, images per second at the median, and what was measured: batch size, device,
    threads actually used, dtype, torch version, CPU.
    """
    if repeats < 1 or batch_size < 1 or warmup < 0:
        raise MetricError("step_latency needs repeats ≥ 1, batch_size ≥ 1 and warmup ≥ 0")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MetricError("device 'cuda' was asked for but no CUDA GPU is available")
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch_size, *_sample_shape(unet, sample_shape), generator=gen)
    timestep = torch.randint(0, 1000, (batch_size,), generator=gen)
    sample, timestep = sample.to(dev, _input_dtype(unet)), timestep.to(dev)

    times = []
    with _threads(threads) as used_threads, _on_device_in_eval(unet, dev) as model, \
            torch.inference_mode():
        for i in range(warmup + repeats):
            _sync(dev)
            start = time.perf_counter()
            model(sample, timestep)
            _sync(dev)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    times = np.asarray(times)
    median = float(np.median(times))
    return {
        "median_s": median,
        "p10_s": float(np.percentile(times, 10)),
        "p90_s": float(np.percentile(times, 90)),
        "images_per_s": batch_size / median,
        "batch_size": batch_size,
        "repeats": repeats,
        "warmup": warmup,
        "device": str(dev),
        "threads": used_threads,
        "dtype": str(sample.dtype).replace("torch.", ""),
        "torch_version": torch.__version__,
        "cpu": cpu_info()["cpu"],
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "",
    }


def sampling_throughput(unet, scheduler_config: dict, sampler: str, steps: int, n: int = 16,
                        device: str = "cpu", seed: int = 0, batch_size: Optional[int] = None,
                        threads: Optional[int] = None, warmup: bool = True,
                        **sampler_kwargs) -> dict:
    """Images per second of full sampling with ``litediff_core.samplers.generate``
    (``sampler_kwargs``, e.g. ``eta``, go to the sampler).

    With ``warmup`` one untimed image with two steps is drawn first (first-call overheads).
    The model is moved to ``device`` for the measurement and back afterwards.
    """
    from ..samplers import generate  # imported only when used

    batch_size = batch_size or n
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MetricError("device 'cuda' was asked for but no CUDA GPU is available")
    with _threads(threads) as used_threads, _on_device_in_eval(unet, dev) as unet:
        if warmup:
            generate(unet, scheduler_config, sampler=sampler, steps=min(steps, 2), n=1, seed=seed,
                     batch_size=1, device=device, **sampler_kwargs)
        _sync(dev)
        start = time.perf_counter()
        generate(unet, scheduler_config, sampler=sampler, steps=steps, n=n, seed=seed,
                 batch_size=batch_size, device=device, **sampler_kwargs)
        _sync(dev)
        seconds = time.perf_counter() - start
    return {
        "images_per_s": n / seconds,
        "seconds": seconds,
        "n": n,
        "steps": steps,
        "sampler": sampler,
        "batch_size": batch_size,
        "device": str(dev),
        "threads": used_threads,
        "torch_version": torch.__version__,
        "cpu": cpu_info()["cpu"],
    }
