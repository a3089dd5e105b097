"""How stages whose model is more than a (pruned, masked) UNet2DModel take part in
:func:`~litediff_core.compress.io.save_compressed` / ``load_compressed``.

``io.py`` knows plain UNet2DModels with a Torch-Pruning history and masks. A stage that changes
the module structure (low-rank factors), keeps state outside the state dict (simulated
activation quantization), converts modules to types safetensors cannot store (dynamic int8) or
wraps the model (ONNX Runtime) registers an :class:`IOHook` when its module is imported. ``io.py``
makes four calls::

    unet = torch_unet(state.unet)             # the torch UNet2DModel whose weights are saved
    extras = save_extras(state.unet, staging) # JSON-able list (files may be written in staging)
    ...
    unet = rebuild_extras(unet, extras, folder)  # after the pruning replay, before the weights
    unet = finish_extras(unet, extras, folder)   # after the weights and masks are loaded

A model may be wrapped several times (ONNX Runtime around a low-rank UNet): ``save_extras``
walks from the outermost model inwards, each hook recording the first level it recognises, and
the list is stored innermost first, the order in which ``finish_extras`` puts the layers back.
:func:`require_torch_weights` lets stages refuse a model they cannot see into.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

from .._lazy import nn
from ..errors import LiteDiffError, ModelSourceError


def _nothing(*args):
    return None


def _same(unet, record, folder):
    return unet


@dataclass(frozen=True)
class IOHook:
    """What a stage adds to saving. Each callable returns None / the model unchanged when the
    model is not of its kind.

    - ``unwrap(model)``: the module holding the torch weights to save, or None.
    - ``record(model, folder)``: a JSON-able dict describing what the state dict alone does not
      (may write files under ``folder``, named in the dict relative to it), or None.
    - ``rebuild(unet, record, folder)``: before the weights are loaded (recreate the structure).
    - ``finish(unet, record, folder)``: after the weights are loaded (re-attach, re-wrap).
    """

    name: str
    record: Callable[[nn.Module, Path], Optional[dict]]
    unwrap: Callable[[nn.Module], Optional[nn.Module]] = _nothing
    rebuild: Callable[[nn.Module, dict, Path], nn.Module] = _same
    finish: Callable[[nn.Module, dict, Path], nn.Module] = _same


IO_HOOKS: Dict[str, IOHook] = {}


def register_io_hook(hook: IOHook) -> IOHook:
    IO_HOOKS[hook.name] = hook
    return hook


def _levels(model) -> List[nn.Module]:
    """The model, then what it wraps, and so on (outermost first)."""
    levels = [model]
    while True:
        inner = next((i for h in IO_HOOKS.values() if (i := h.unwrap(levels[-1])) is not None),
                     None)
        if inner is None or any(inner is level for level in levels):
            return levels
        levels.append(inner)


def torch_unet(model) -> nn.Module:
    """The innermost torch UNet2DModel of ``model`` (``model`` itself when nothing wraps it)."""
    return _levels(model)[-1]


def save_extras(model, folder) -> List[dict]:
    """Records of every hook that recognises a level of ``model`` (``[{"hook": name, ...}]``),
    innermost level first, hooks of one level in registration order; hooks may write files
    under ``folder``."""
    folder, per_level, seen = Path(folder), [], set()
    for level in _levels(model):
        records = []
        for name, hook in IO_HOOKS.items():
            record = None if name in seen else hook.record(level, folder)
            if record is not None:
                records.append({"hook": name, **record})
                seen.add(name)
        per_level.append(records)
    return [r for records in reversed(per_level) for r in records]


def _hook(record: dict) -> IOHook:
    name = record.get("hook") if isinstance(record, dict) else None
    if name not in IO_HOOKS:
        raise ModelSourceError(f"the compressed model was saved by a stage this version does not "
                               f"know ({name!r}); known: {', '.join(IO_HOOKS) or 'none'}")
    return IO_HOOKS[name]


def rebuild_extras(unet, extras, folder) -> nn.Module:
    """Recreate the saved structure before the weights are loaded."""
    for record in extras or ():
        unet = _hook(record).rebuild(unet, record, Path(folder))
    return unet


def finish_extras(unet, extras, folder) -> nn.Module:
    """Re-attach / re-wrap after the weights (and masks) are loaded."""
    for record in extras or ():
        unet = _hook(record).finish(unet, record, Path(folder))
    return unet


def require_torch_weights(model, who: str) -> None:
    """Stages that read or change PyTorch weights refuse a model that has none (an ONNX
    Runtime wrapper) with a message saying what to do."""
    if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
        raise LiteDiffError(f"{who}: the model has no PyTorch weights (an ONNX Runtime model?); "
                            f"apply {who} before quant-onnx-int8")


def require_plain_unet(model, who: str) -> None:
    """Stages that change the channels refuse a model whose structure another stage already
    changed (low-rank factors, quantized layers, a wrapper): on reload the pruning history is
    replayed on the plain UNet, before those changes, and would no longer fit."""
    require_torch_weights(model, who)
    with tempfile.TemporaryDirectory() as tmp:
        found = [r["hook"] for r in save_extras(model, tmp)]
    if found:
        raise LiteDiffError(f"{who}: the model was already changed by {', '.join(found)}; "
                            f"put {who} before {'it' if len(found) == 1 else 'them'} in the recipe")
