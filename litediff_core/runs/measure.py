"""Measurement of a saved run against its base: quality, size, step and whole-image time (as
ratios taken in alternating rounds of one process), consistency, and the per-layer table."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd

from ..errors import LiteDiffError
from ..fileio import atomic_file
from ..progress import Progress, report
from ..recipes import Recipe
from ..results import Consistency, Latency, PerImage, RunResult, Size
if TYPE_CHECKING:
    import torch

from .store import GRID, LAYERS, METRICS, MODEL, RunStore, _write_json

LATENCY_ROUNDS = 3
LATENCY_PAUSE_S = 0.5


def measure(base, model_dir: Path, recipe: Recipe, device: str, out: Path,
            progress: Optional[Progress] = None) -> RunResult:
    """Evaluate the saved model against its base, with ratios measured in this one run."""
    from ..evaluate import EvalConfig, evaluate
    from ..metrics import ssim_psnr
    from ..models import load_base
    from ..samplers import generate, grid

    from ..compress.quant_onnx import OnnxUNet

    compressed = load_base(str(model_dir))
    compressed.meta.dataset = base.meta.dataset
    if isinstance(compressed.unet, OnnxUNet):
        device = "cpu"  # our ONNX Runtime sessions run on the CPU; the base is timed there too
    ev = recipe.eval
    cfg = EvalConfig(n=ev["n"], sampler=ev["sampler"], steps=ev["steps"], eta=ev["eta"],
                     seed=recipe.seed, device=device, latency_batch=ev["latency_batch"])
    result = RunResult.from_dict(evaluate(compressed, cfg, progress=progress))
    # the ratio to the base: both timed in alternating rounds on the same device and threads,
    # so a slow spell of a shared machine hits both (median of the rounds' medians)
    result = dataclasses.replace(result, **latency_vs_base(base.unet, compressed.unet,
                                                           cfg.latency_batch, device))
    report(progress, 0, 1, "timing whole images against the dense base at DDIM 50")
    result.per_image = image_cost_vs_base(base, compressed, cfg, device)
    # consistency: the run's own sampling against the dense base's reference sampling (DDIM
    # 50), from the same noise (for DDIM-50 runs: the same sampler on both sides)
    from ..evaluate import caching_of, sampler_kwargs

    ref = REFERENCE_SAMPLING
    images = generate(compressed.unet.to(device), dict(compressed.scheduler.config),
                      sampler=ev["sampler"], steps=ev["steps"], n=min(ev["n"], 256),
                      seed=recipe.seed, device=device, **sampler_kwargs(cfg))
    reference = base_samples(base, ref["sampler"], ref["steps"], min(ev["n"], 256), recipe.seed,
                             device, cache=out.parent / "_cache")
    cons = ssim_psnr(images, reference)
    own = f"{ev['sampler']} {ev['steps']} steps" + (f", η={cfg.eta:g}" if cfg.eta else "") + (
        f", cached every {caching_of(compressed.unet)['cache_interval']}"
        if caching_of(compressed.unet) else "")
    result.consistency = Consistency(
        ssim_mean=cons["ssim_mean"], psnr_mean=cons["psnr_mean"], n=cons["n"],
        setup=f"compressed with {own} vs the base with DDIM {ref['steps']} steps, same noise "
              f"(seed {recipe.seed})")
    grid(images[:64], nrow=8).save(out / GRID)
    from ..compress._io_hooks import torch_unet  # the torch UNet inside a runtime wrapper

    layers(base.unet, torch_unet(compressed.unet).cpu()).to_csv(out / LAYERS, index=False)
    return result


def latency_vs_base(base_unet, unet, batch_size: int, device: str) -> dict:
    """Step latency of ``unet`` and its ratio to ``base_unet``, timed in LATENCY_ROUNDS
    alternating rounds on the same device and threads, so that a slow spell of a shared
    machine hits both: ``speedup`` is the median of the rounds' ratios. Returns the
    :class:`RunResult` fields ``base_latency``, ``latency``, ``speedup``, ``speedup_rounds``."""
    rounds = [(_timed_after_pause(base_unet, batch_size, device),
               _timed_after_pause(unet, batch_size, device)) for _ in range(LATENCY_ROUNDS)]
    ratios = sorted(b.median_s / c.median_s for b, c in rounds)
    fastest = [min((r[i] for r in rounds), key=lambda x: x.median_s) for i in (0, 1)]
    return {"base_latency": fastest[0], "latency": fastest[1],
            "speedup": ratios[len(ratios) // 2], "speedup_rounds": ratios}


REFERENCE_SAMPLING = {"sampler": "ddim", "steps": 50}   # what per-image speed-ups compare to


def unet_calls(steps: int, interval: Optional[int] = None) -> tuple:
    """(full, cached) UNet calls of one trajectory of ``steps`` steps; every sampler here
    calls the UNet once per step, and DeepCache runs the whole UNet every ``interval`` calls."""
    full = steps if not interval else -(-steps // interval)
    return full, steps - full


def image_macs(size: dict, steps: int, interval: Optional[int] = None) -> int:
    """MACs to generate one image: full steps × MACs per step + cached steps × their MACs
    (``size``: a ``size_report`` dict or a :class:`Size`)."""
    size = size if isinstance(size, Size) else Size.from_dict(size)
    full, cached = unet_calls(steps, interval)
    return int(full * size.macs_per_image + cached * (size.cached_step_macs or 0))


def image_cost_vs_base(base, compressed, cfg, device: str) -> PerImage:
    """Time and MACs to generate one image with the run's own sampler, steps, η and caching,
    against the dense base with DDIM 50 steps: a batch of ``cfg.latency_batch`` images drawn
    end to end (sampler arithmetic included), the two timed in LATENCY_ROUNDS alternating
    rounds; ``speedup`` is the median of the rounds' ratios."""
    from ..evaluate import caching_of, sampler_kwargs
    from ..metrics import sampling_throughput, size_report

    ref = REFERENCE_SAMPLING
    batch, kwargs = cfg.latency_batch, sampler_kwargs(cfg)
    load = os.getloadavg()[0]   # timings taken while other jobs ran are recorded as such
    rounds = []
    for _ in range(LATENCY_ROUNDS):
        time.sleep(LATENCY_PAUSE_S)
        b = sampling_throughput(base.unet, dict(base.scheduler.config), ref["sampler"],
                                ref["steps"], n=batch, device=device)
        time.sleep(LATENCY_PAUSE_S)
        c = sampling_throughput(compressed.unet, dict(compressed.scheduler.config), cfg.sampler,
                                cfg.steps, n=batch, device=device, **kwargs)
        rounds.append((b["seconds"] / batch, c["seconds"] / batch))
    ratios = sorted(b / c for b, c in rounds)
    caching = caching_of(compressed.unet)
    interval = caching.get("cache_interval")
    full, cached = unet_calls(cfg.steps, interval)
    return PerImage(
        seconds=min(c for _, c in rounds), base_seconds=min(b for b, _ in rounds),
        speedup=ratios[len(ratios) // 2], speedup_rounds=ratios,
        macs=image_macs(size_report(compressed.unet), cfg.steps, interval),
        base_macs=image_macs(size_report(base.unet), ref["steps"]),
        unet_calls={"full": full, "cached": cached},
        setup={"sampler": cfg.sampler, "steps": cfg.steps, **kwargs, **caching},
        base_setup=dict(ref), batch_size=batch, device=str(device),
        threads=_threads(), load_average=round(load, 2))


def remeasure_latency(store: RunStore, run_id: str, device: str = "cpu",
                      progress: Optional[Progress] = None,
                      bases: Optional[dict] = None) -> RunResult:
    """Time a stored run against its base again (e.g. once the machine is quiet) and update
    its metrics in place; the previous figures are kept under ``latency_history``. ``bases``
    (source → loaded base) lets a loop over many runs load each base once. Returns the
    updated result."""
    from ..models import load_base

    run = store.load(run_id)
    if run["status"].get("status") != "done":
        raise LiteDiffError(f"run {run_id} is not finished")
    model_dir = store.root / run_id / MODEL
    if not model_dir.is_dir():
        raise LiteDiffError(f"run {run_id} has no saved model (cached results ship without "
                            f"weights: regenerate them to time them)")
    batch = int(Recipe.from_dict(run["recipe"]).eval["latency_batch"])
    bases = {} if bases is None else bases
    source = run["recipe"]["base"]
    base = bases[source] = bases.get(source) or load_base(source)
    compressed = load_base(str(model_dir))
    from ..compress.quant_onnx import OnnxUNet

    if isinstance(compressed.unet, OnnxUNet):
        device = "cpu"  # as when it was measured first
    report(progress, 0, 1, f"timing {run_id}")
    new = latency_vs_base(base.unet, compressed.unet, batch, device)
    from ..evaluate import EvalConfig

    ev = Recipe.from_dict(run["recipe"]).eval
    new["per_image"] = image_cost_vs_base(base, compressed, EvalConfig(
        sampler=ev["sampler"], steps=ev["steps"], eta=ev["eta"], latency_batch=batch), device)
    # the figures replaced, kept as they were stored (None where the run had none)
    old = {k: run["metrics"].get(k) for k in ("latency", "base_latency", "speedup",
                                               "speedup_rounds", "per_image")}
    result = run["result"]
    result = dataclasses.replace(
        result, **new, latency_history=(result.latency_history or []) + [old],
        latency_remeasured=time.strftime("%Y-%m-%d %H:%M:%S"))
    _write_json(store.root / run_id / METRICS, result.to_dict())
    report(progress, 1, 1, f"{run_id}: {result.speedup:.2f}×")
    return result


def _timed_after_pause(unet, batch_size: int, device: str) -> Latency:
    """``step_latency`` after LATENCY_PAUSE_S idle: thread pools (PyTorch's OpenMP, each ONNX
    Runtime session's) spin-wait for a while after a call, and one still spinning slows the
    next model on a small machine (ORT int8 after PyTorch: 35 instead of 20 ms per step)."""
    from ..metrics import step_latency

    time.sleep(LATENCY_PAUSE_S)
    return Latency.from_dict(step_latency(unet, batch_size=batch_size, device=device))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def base_samples(base, sampler: str, steps: int, n: int, seed: int, device: str,
                 cache: Optional[Path] = None) -> "torch.Tensor":
    """The base model's samples for a setup, cached under a key of its weights and the setup."""
    import hashlib

    from safetensors.torch import load_file, save, save_file

    from ..samplers import generate

    path = None
    if cache is not None:
        weights = save({k: v.contiguous() for k, v in base.unet.state_dict().items()})
        key = hashlib.sha256(weights + json.dumps(
            [dict(base.scheduler.config), sampler, steps, n, seed], sort_keys=True,
            default=str).encode()).hexdigest()[:24]
        path = Path(cache) / f"base-samples-{key}.safetensors"
        if path.exists():
            return load_file(str(path))["images"]
    images = generate(base.unet.to(device), dict(base.scheduler.config), sampler=sampler,
                      steps=steps, n=n, seed=seed, device=device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            save_file({"images": images.contiguous()}, str(tmp))
    return images


def layers(before, after) -> pd.DataFrame:
    """Per-layer table of a base and a compressed UNet, joined on the layer name."""
    from ..metrics import layer_table

    a, b = layer_table(before), layer_table(after)
    for t in (a, b):
        t["channels"] = t["shape"].map(lambda s: int(str(s).split("×")[0]) if s else None)
    cols = ["name", "type", "params", "nonzeros", "macs", "channels"]
    merged = a[cols].merge(b[cols], on="name", how="outer", suffixes=("_before", "_after"),
                           sort=False)
    merged["type"] = merged["type_before"].fillna(merged["type_after"])
    merged["sparsity_after"] = 1 - merged["nonzeros_after"] / merged["params_after"]
    return merged[["name", "type", "params_before", "params_after", "channels_before",
                   "channels_after", "sparsity_after", "macs_before", "macs_after"]]
