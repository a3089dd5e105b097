"""Saving and loading compressed models, without pickle.

A compressed model is a diffusers DDPMPipeline folder written by
:func:`litediff_core.models.save_model` (safetensors weights, ``litediff.json``), plus::

    folder/pruning_history.json   # original (pre-pruning) UNet config + Torch-Pruning history
    folder/masks.safetensors      # unstructured masks, when there are any (weights saved folded)

``unet/config.json`` describes the model *before* structured pruning, so diffusers'
``from_pretrained`` cannot load a channel-pruned UNet (shape mismatch). :func:`load_compressed`
rebuilds it: the dense model from the original config, Torch-Pruning's
``DependencyGraph.load_pruning_history`` replaying the recorded pruning, the diffusers attributes
patched, then the safetensors weights loaded strictly and the masks re-applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

from .._lazy import torch
from ..fileio import atomic_dir
from ..errors import ModelSourceError
from ..models.io import META_FILE, save_model
from ._io_hooks import finish_extras, rebuild_extras, save_extras, torch_unet
from .base import clone_model
from .structured import example_inputs, patch_diffusers_attributes
from .unstructured import apply_masks, make_permanent, masks

HISTORY_FILE = "pruning_history.json"
MASKS_FILE = "masks.safetensors"
FORMAT = 1


def save_compressed(state, folder, meta: dict) -> Path:
    """Write ``state.unet`` (masks folded) and ``state.scheduler`` to ``folder``, replacing it
    whole; ``meta`` goes to ``litediff.json`` with the state's notes and log added."""
    from safetensors.torch import save_file

    folder = Path(folder)
    unet = torch_unet(state.unet)  # the torch UNet inside a wrapper (ONNX Runtime, int8)
    mask_dict = masks(unet)
    if mask_dict:
        unet = make_permanent(clone_model(unet))
    card = {**meta, "compression": {"format": FORMAT, "dataset": state.dataset,
                                    "structured": bool(state.pruning_history),
                                    "unstructured": bool(mask_dict),
                                    "notes": list(state.notes), "log": list(state.log)}}
    with atomic_dir(folder) as staging:
        save_model(unet, state.scheduler, staging, card)
        (staging / HISTORY_FILE).write_text(json.dumps({
            "format": FORMAT,
            "original_config": _plain(dict(unet.config)),
            "pruning_history": state.pruning_history,
            "extras": save_extras(state.unet, staging),  # low-rank, quantization, ONNX files
        }))
        if mask_dict:
            save_file({k: v.to(torch.uint8).contiguous() for k, v in mask_dict.items()},
                      str(staging / MASKS_FILE))
    return folder


def load_compressed(folder) -> Tuple[object, object, dict]:
    """``(unet, scheduler, meta)`` of a folder written by :func:`save_compressed`; ``meta`` is
    ``litediff.json`` plus ``pruning_history`` (to continue compressing the model)."""
    import torch_pruning as tp
    from diffusers import DDPMScheduler, UNet2DModel
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        saved = json.loads((folder / HISTORY_FILE).read_text())
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ModelSourceError(f"{folder} is not a compressed LiteDiff model "
                               f"({HISTORY_FILE} / {META_FILE} unreadable: {e})") from None
    if saved.get("format") != FORMAT:
        raise ModelSourceError(f"{folder / HISTORY_FILE} has format {saved.get('format')!r}; "
                               f"this version reads format {FORMAT}")
    history = saved["pruning_history"]
    unet = UNet2DModel.from_config(saved["original_config"])
    if history:
        # tracing draws an example input and needs autograd
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(unet, example_inputs(unet))
            graph.load_pruning_history(history)
        patch_diffusers_attributes(unet)
    extras = saved.get("extras", [])
    unet = rebuild_extras(unet, extras, folder)  # e.g. low-rank layers, before the weights
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    try:
        unet.load_state_dict(load_file(str(weights)), strict=True)
    except (OSError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelSourceError(f"cannot load the compressed weights {weights}: {first[:200]}")
    if (folder / MASKS_FILE).exists():
        apply_masks(unet, load_file(str(folder / MASKS_FILE)))
    unet = finish_extras(unet, extras, folder)  # e.g. quantizers re-attached, ONNX re-wrapped
    scheduler = DDPMScheduler.from_pretrained(str(folder / "scheduler"))
    return unet.eval(), scheduler, {**meta, "pruning_history": history}


def _plain(value):
    """JSON-able copy of a diffusers config (tuples -> lists, FrozenDicts -> dicts)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
