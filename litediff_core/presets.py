"""Named presets: the seed papers' configurations as recipes that run on any base model.

Each preset builds a :class:`~litediff_core.recipes.Recipe` from a few knobs (prune ratio ``p``,
fine-tune ``steps``); the dashboard shows them as one-click buttons and ``litediff compress
--preset`` runs them. Budgets are ours (CPU-sized), not the papers': the papers' reported numbers
come from other setups and are never mixed with these runs' measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

from .errors import LiteDiffError
from .recipes import Recipe


def _prune(p, importance="l1", **kw):
    return {"stage": "structured-prune", "config": {"ratio": p, "importance": importance, **kw}}


def _ft(steps, **kw):
    return {"stage": "finetune", "config": {"steps": steps, **kw}}


# Recovery by distillation from the dense teacher: 0.7 · teacher + 0.3 · true noise (Diff-Pruning's
# scripts), an EMA of the weights, lr 1e-3. Measured on the embedded default (issue 9): structured
# Diff-Pruning 30 % recovered to FID 180.8 (200 samples) in 1,600 steps this way, against 565 for
# a 400-step plain fine-tune; benchmarks/recovery.md has the curves.
RECOVERY = {"kd_frac": 0.7, "ema": True, "ema_decay": 0.995, "lr": 1e-3}


def _kd(steps, **kw):
    return {"stage": "distill", "config": {"steps": steps, **RECOVERY, **kw}}


@dataclass(frozen=True)
class Preset:
    name: str
    paper: str
    description: str
    build: Callable[..., List[dict]]   # (p, steps) -> stages


PRESETS: Dict[str, Preset] = {p.name: p for p in [
    Preset("litediffusion-prune-ft", "LiteDiffusion", "Prune(BM, p) + fine-tune",
           lambda p=0.3, steps=400: [_prune(p), _ft(steps)]),
    Preset("litediffusion-kd-prune", "LiteDiffusion", "KD(BM, Prune(BM, p), s=1)",
           lambda p=0.3, steps=400: [_prune(p), _kd(steps)]),
    Preset("litediffusion-quant-kd-prune", "LiteDiffusion",
           "Quant(KD(BM, Prune(BM, p)), int8) — ONNX Runtime int8",
           lambda p=0.3, steps=400: [_prune(p), _kd(steps), {"stage": "quant-onnx-int8"}]),
    Preset("litediffusion-kd-lora-prune", "LiteDiffusion", "KD(BM, LoRA(Prune(BM, p)), r=2)",
           lambda p=0.3, steps=400: [_prune(p), {"stage": "lora", "config": {
               "r": 2, "steps": steps, **RECOVERY}}]),
    Preset("litediffusion-kd-s2", "LiteDiffusion", "KD(BM, s=2): a fresh half-width student",
           lambda p=None, steps=1000: [_kd(steps, fresh=True, scale=2)]),
    Preset("litediffusion-kd-s4", "LiteDiffusion", "KD(BM, s=4): a fresh quarter-width student",
           lambda p=None, steps=1000: [_kd(steps, fresh=True, scale=4)]),
    Preset("diff-pruning", "Diff-Pruning (Fang et al. 2023)",
           "Taylor importance over timesteps with L_t/L_max > T = 0.05, then recovery by "
           "distillation (0.7 teacher + 0.3 noise, as the authors' scripts)",
           lambda p=0.3, steps=400: [_prune(p, "diff-pruning", threshold=0.05), _kd(steps)]),
    Preset("tiny-diffusion", "Towards Tiny Diffusion",
           "unstructured α|w|+β|∂L/∂w| pruning, L1-regularised fine-tune with regrowth",
           lambda p=0.5, steps=400: [
               {"stage": "unstructured-prune", "config": {"ratio": p, "method": "tiny-diffusion"}},
               _ft(steps, l1_lambda=1e-6, regrowth=0.05)]),
    Preset("mini-diffusion-taylor", "Mini Diffusion", "Taylor pruning at 0.3 + fine-tune",
           lambda p=0.3, steps=400: [_prune(p, "taylor"), _ft(steps)]),
    Preset("mini-diffusion-magnitude", "Mini Diffusion", "magnitude pruning at 0.3 + fine-tune",
           lambda p=0.3, steps=400: [_prune(p, "l1"), _ft(steps)]),
    Preset("mini-diffusion-diff-pruning", "Mini Diffusion", "Diff-Pruning at 0.3 + fine-tune",
           lambda p=0.3, steps=400: [_prune(p, "diff-pruning"), _ft(steps)]),
]}


def preset_recipe(name: str, base: str = "embedded", p=None, steps=None, seed: int = 0,
                  eval=None) -> Recipe:
    if name not in PRESETS:
        raise LiteDiffError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    kwargs = {k: v for k, v in (("p", p), ("steps", steps)) if v is not None}
    stages = preset.build(**kwargs)
    label = preset.description + (f", p={p}" if p is not None else "")
    return Recipe(base=base, seed=seed, stages=stages, eval=eval or {},
                  name=f"{preset.name}: {label}")
