"""The compression engine: stages that turn a base UNet into a smaller one.

Torch-Pruning style — the public call stays tiny::

    from litediff_core.compress import CompressState, StructuredPrune, save_compressed

    state = CompressState.start(base.unet, base.scheduler, dataset="fashion-mnist", data=images)
    state = StructuredPrune(ratio=0.3, importance="diff-pruning").apply(state, progress)
    save_compressed(state, "runs/pruned", meta={...})

``STAGES`` maps each stage name to its class (the UI builds its dropdowns from it and from
:func:`describe_stage`); :func:`make_stage` rebuilds a stage from ``stage.to_dict()``.
"""

from __future__ import annotations

from typing import List

from .._lazy import exported_from
from ..errors import LiteDiffError
from .base import FAMILIES, REGISTRY, CompressState, Stage, describe_config
from .io import load_compressed, save_compressed
from .preview import preview_size
from .lowrank import LowRank
from .quant_dynamic import DynamicInt8
from .quant_onnx import OnnxInt8
from .quant_simulated import SimulatedQuant
from .structured import StructuredPrune, patch_diffusers_attributes
from .unstructured import UnstructuredPrune, apply_masks, make_permanent, masks
from .finetune import FineTune  # recovery training stages
from .distill import Distill
from .lora import LoRA
from .runtime_onnx import OnnxRuntime  # another engine, same numbers
from .deepcache import DeepCache  # sampling-time: feature caching

# Importing the package (the registry below) imports no torch: stage modules name torch through
# litediff_core._lazy, and the nn.Module wrappers live in private modules, read on first use.
__getattr__ = exported_from(__name__, __name__, {"OnnxUNet": "._onnx",
                                                 "DeepCacheUNet": "._deepcache_unet"})


def _import_every_stage_module() -> None:
    """Import each public module of this package: defining a Stage subclass registers it."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_every_stage_module()
# every registered stage, by family (the order forms list them), then as defined
STAGES = dict(sorted(REGISTRY.items(), key=lambda item: FAMILIES.index(item[1].family)))

__all__ = ["STAGES", "CompressState", "DynamicInt8", "LowRank", "OnnxInt8", "OnnxRuntime",
           "OnnxUNet", "SimulatedQuant", "Stage", "StructuredPrune", "UnstructuredPrune",
           "apply_masks", "describe_stage", "load_compressed", "make_permanent", "make_stage",
           "masks", "patch_diffusers_attributes", "preview_size", "save_compressed"]
__all__ += ["Distill", "FineTune", "LoRA", "DeepCache", "DeepCacheUNet"]


def _stage_class(name: str):
    if name not in STAGES:
        raise LiteDiffError(f"unknown compression stage {name!r}; choose one of "
                            f"{', '.join(STAGES)}")
    return STAGES[name]


def describe_stage(name: str) -> List[dict]:
    """The options of a stage for forms: ``[{name, type, default, choices, help}]``, type one
    of bool / int / float / str / list[str] (a subset of ``choices``)."""
    return describe_config(_stage_class(name).Config)


def make_stage(spec) -> Stage:
    """A stage from ``{"stage": name, "config": {...}}`` (what ``stage.to_dict()`` gives)."""
    if not isinstance(spec, dict) or "stage" not in spec:
        raise LiteDiffError('a stage is written {"stage": name, "config": {options}}')
    return _stage_class(spec["stage"])(spec.get("config") or {})
