"""Evaluate a model the way every figure in LiteDiff Lab is made: sample with a named sampler,
then size, speed, fidelity (with its setup and interval) and, for Fashion-MNIST, the quality gate
of the embedded model (the feature classifier's confidence and class mix)."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from . import __version__
from .data import load_dataset
from .data.datasets import to_uint8
from .device import cpu_info, machine_of, resolve_device
from .errors import LiteDiffError
from .progress import Progress

GATE_MIN_CONFIDENCE = 0.80
GATE_CLASS_RANGE = (0.04, 0.16)


@dataclass
class EvalConfig:
    n: int = 1000
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0                  # DDIM's η (ddim and ams only)
    seed: int = 0
    batch_size: int = 100
    device: str = "auto"
    reference_split: str = "test"
    latency_batch: int = 16
    bootstrap: Optional[int] = None   # None: 200 resamples (20 for Inception features)


def sampler_kwargs(cfg) -> dict:
    """The sampler options of an evaluation setup beyond sampler and steps (η when it is set)."""
    return {"eta": float(cfg.eta)} if cfg.eta else {}


def caching_of(unet) -> dict:
    """``{"cache_interval": N, "cache_branch": b}`` for a DeepCache-wrapped UNet, else {}."""
    interval = getattr(unet, "interval", None)
    return {"cache_interval": interval, "cache_branch": unet.branch} if interval else {}


def classifier_confidence(images: torch.Tensor) -> float:
    """Mean max-probability the shipped Fashion-MNIST classifier gives ``images`` (float
    [-1, 1], N×1×28×28): a cheap per-grid quality figure (recognisable garments score high),
    meaningful for Fashion-MNIST models only."""
    from .models.classifier import load_classifier

    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise LiteDiffError(f"the Fashion-MNIST classifier reads 1×28×28 images, not "
                            f"{'×'.join(map(str, images.shape[1:]))}")
    return load_classifier().probabilities(images.float()).max(1).values.mean().item()


def grid_quality(images: torch.Tensor) -> dict:
    """The quality gate's two parts as one per-grid figure that blank or single-class grids
    cannot win (Fashion-MNIST models only; ``images`` float [-1, 1], N×1×28×28):

    - ``confidence``: the shipped classifier's mean max-probability (recognisable garments);
    - ``coverage``: the effective number of classes among the images, exp(entropy of the
      predicted-class histogram), over the 10 classes (0.1 = every image the same class);
    - ``score`` = confidence × coverage. A grid of grey squares scores ≤ 0.1 however sure the
      classifier is; with N < 10 images coverage cannot exceed N/10, so compare equal N.
    """
    from .models.classifier import load_classifier

    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise LiteDiffError(f"the Fashion-MNIST classifier reads 1×28×28 images, not "
                            f"{'×'.join(map(str, images.shape[1:]))}")
    probs = load_classifier().probabilities(images.float())
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double()
    p = counts[counts > 0] / counts.sum()
    coverage = float(torch.exp(-(p * p.log()).sum())) / probs.shape[1]
    confidence = probs.max(1).values.mean().item()
    return {"confidence": confidence, "coverage": coverage, "score": confidence * coverage,
            "classes": int((counts > 0).sum()), "n": len(images)}


def quality_gate(images: torch.Tensor, classes=None) -> dict:
    """The embedded model's gate: mean max-probability of the Fashion-MNIST classifier ≥ 0.80 and
    every class between 4% and 16% of the samples. ``images``: float [-1, 1], N×1×28×28."""
    from .models.classifier import load_classifier

    probs = load_classifier().probabilities(images.float())
    conf = probs.max(1).values.mean().item()
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).float()
    fractions = (counts / counts.sum()).tolist()
    names = classes or [str(i) for i in range(len(fractions))]
    lo, hi = GATE_CLASS_RANGE
    return {
        "mean_max_probability": round(conf, 4),
        "class_fractions": {n: round(f, 4) for n, f in zip(names, fractions)},
        "passes": conf >= GATE_MIN_CONFIDENCE and all(lo <= f <= hi for f in fractions),
        "rule": f"mean max-probability ≥ {GATE_MIN_CONFIDENCE} and every class within "
                f"{lo:.0%}–{hi:.0%}",
        "n": len(images),
    }


def evaluate(base, cfg: EvalConfig, progress: Optional[Progress] = None,
             images: Optional[torch.Tensor] = None) -> dict:
    """Full evaluation of ``base`` (a :class:`litediff_core.models.BaseModel`).

    ``images`` may pass samples already drawn with exactly ``cfg``'s sampler/steps/seed/n."""
    from .metrics import fidelity, size_report, step_latency
    from .samplers import generate

    meta = base.meta
    if not meta.dataset:
        raise LiteDiffError(f"{meta.source}: unknown dataset; pass --dataset to evaluate it")
    device = resolve_device(cfg.device)
    reference = load_dataset(meta.dataset, cfg.reference_split)
    if (reference.channels, reference.resolution) != (meta.channels, meta.resolution):
        raise LiteDiffError(
            f"{meta.source} makes {meta.channels}×{meta.resolution}×{meta.resolution} images but "
            f"{meta.dataset} has {reference.channels}×{reference.resolution}×"
            f"{reference.resolution}: choose the dataset the model was trained on")
    unet = base.unet.to(device)
    if images is None:
        images = generate(unet, dict(base.scheduler.config), sampler=cfg.sampler,
                          steps=cfg.steps, n=cfg.n, seed=cfg.seed, batch_size=cfg.batch_size,
                          device=device, progress=progress, **sampler_kwargs(cfg))
    fid = fidelity(to_uint8(images), reference.uint8,
                   reference_name=f"{meta.dataset}-{cfg.reference_split}",
                   bootstrap=cfg.bootstrap, seed=cfg.seed, device=device, progress=progress,
                   setup={"sampler": cfg.sampler, "steps": cfg.steps, "seed": cfg.seed,
                          **sampler_kwargs(cfg), **caching_of(unet)})
    result = {
        "model": meta.source,
        "dataset": meta.dataset,
        "setup": asdict(cfg) | {"device": device},
        "size": size_report(unet.cpu()),
        "latency": step_latency(unet, batch_size=cfg.latency_batch, device=device),
        "fidelity": fid.to_dict() | {"label": fid.label()},
        "environment": {"litediff": __version__, "torch": torch.__version__,
                        "machine": platform.machine(), "threads": torch.get_num_threads(),
                        **cpu_info(),  # and the GPU's name where there is one
                        **({"gpu": machine_of(device)} if str(device).startswith("cuda")
                           else {})},
    }
    if meta.dataset == "fashion-mnist":
        result["quality_gate"] = quality_gate(images, meta.classes or reference.classes)
    return result
