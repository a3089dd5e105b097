"""PyTorch dynamic int8 quantization — Linear layers only; convolutions stay fp32.

``torch.ao.quantization.quantize_dynamic`` stores each selected ``nn.Linear`` weight as int8
(per-tensor, symmetric) and quantizes its input on the fly at every call, per batch; there is no
calibration. It never converts Conv2d, so in a UNet, whose MACs are nearly all convolutions, it
touches a small share of the work: the stage measures that share (MACs of the converted Linear
layers / all MACs, fvcore) and states it in the notes. ``torch.ao.quantization`` is deprecated
(its warnings are silenced here); it runs on CPU only.

After the stage, ``metrics.model_bytes`` counts the packed weights as int8 values plus their
scales, and ``count_params`` / MACs count them as before (quantization changes the storage and
the arithmetic, not the number of weights or MACs).

Saving (IO hook): the weights are saved dequantized (int8 value × scale, exact in fp32) with
each layer's scale and zero point in ``pruning_history.json``; loading re-quantizes them to the
very same int8 values.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .._lazy import nn, size, torch
from ..errors import LiteDiffError
from ..progress import Progress, report
from ._common import PROTECT_SETS, all_submodules, protected_modules
from ._io_hooks import IOHook, register_io_hook, require_torch_weights
from .base import CompressState, Stage, clone_model, option
from .unstructured import make_permanent


@contextmanager
def _quiet():
    """Silence torch.ao.quantization's deprecation and quantized-tensor warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantiz.*", category=UserWarning)
        yield


def _dynamic_linear_type():
    with _quiet():
        from torch.ao.nn.quantized.dynamic import Linear
    return Linear


def dynamic_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """Name -> module of every dynamically quantized Linear of ``model``."""
    if not isinstance(model, nn.Module):
        return {}
    kind = _dynamic_linear_type()
    return {n: m for n, m in model.named_modules() if isinstance(m, kind)}


def quantize_linear_layers(unet: nn.Module, names) -> nn.Module:
    """``quantize_dynamic`` of the named Linear layers of ``unet`` (in place), int8 weights."""
    with _quiet():
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(unet, {n: default_dynamic_qconfig for n in names},
                                dtype=torch.qint8, inplace=True)


class DynamicInt8(Stage):
    """Dynamic int8 quantization of Linear layers (PyTorch); see the module docstring."""

    name = "quant-dynamic"
    family = "quant"

    @dataclass
    class Config:
        protect: Tuple[str, ...] = option(("time_embedding",), "modules left in fp32",
                                          PROTECT_SETS)

    def transform(self, state: CompressState, progress: Optional[Progress] = None):
        """Quantize a copy of ``state.unet``."""
        c = self.config
        require_torch_weights(state.unet, self.name)
        if dynamic_layers(state.unet):
            raise LiteDiffError(f"{self.name}: the model is already dynamically quantized")
        unet = make_permanent(clone_model(state.unet)).eval()
        skip = all_submodules(protected_modules(unet, c.protect))
        names = [n for n, m in unet.named_modules()
                 if type(m) is nn.Linear and m not in skip]
        if not names:
            raise LiteDiffError(f"{self.name}: the model has no unprotected Linear layer")
        table = size.layer_table(unet)  # MACs per layer, before conversion
        macs = dict(zip(table["name"], table["macs"]))
        total = int(table["macs"].sum())
        covered = sum(int(macs.get(n, 0)) for n in names) / total if total else 0.0
        params_total = size.count_params(unet)
        linear_params = sum(unet.get_submodule(n).weight.numel() for n in names)
        report(progress, 0, 1, f"{self.name}: converting {len(names)} Linear layers")
        quantize_linear_layers(unet, names)
        report(progress, 1, 1, f"{self.name}: done")
        state.note(f"dynamic int8 (PyTorch): Linear layers only; convolutions stay fp32. The "
                   f"converted layers carry {covered:.1%} of the MACs and "
                   f"{linear_params / params_total:.1%} of the weights; CPU only")
        return unet, {"layers": len(names), "macs_fraction_int8": covered,
                      "linear_weights": linear_params,
                      "weights_fraction_int8": linear_params / params_total}


# ----------------------------------------------------------------------------- saving

def _unwrap(model):
    layers = dynamic_layers(model)
    if not layers:
        return None
    plain = clone_model(model)
    with torch.no_grad():
        for name, q in dynamic_layers(plain).items():
            weight, bias = q._weight_bias()
            lin = nn.Linear(q.in_features, q.out_features, bias=bias is not None)
            lin.weight.copy_(weight.dequantize())
            if bias is not None:
                lin.bias.copy_(bias)
            parent, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent) if parent else plain, child, lin.eval())
    return plain


def _record(model, folder) -> Optional[dict]:
    layers = dynamic_layers(model)
    if not layers:
        return None
    out = {}
    for name, q in layers.items():
        w = q._weight_bias()[0]
        if w.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise LiteDiffError(f"quant-dynamic: cannot save {name}: {w.qscheme()} weights")
        out[name] = {"scale": float(w.q_scale()), "zero_point": int(w.q_zero_point())}
    return {"layers": out}


def _finish(unet, record, folder):
    layers = record["layers"]
    plain = {n: unet.get_submodule(n) for n in layers}
    quantize_linear_layers(unet, list(layers))
    with torch.no_grad(), _quiet():
        for name, q in dynamic_layers(unet).items():
            lin, qp = plain[name], layers[name]
            weight = torch.quantize_per_tensor(lin.weight.detach().float(), qp["scale"],
                                               qp["zero_point"], torch.qint8)
            q.set_weight_bias(weight, None if lin.bias is None else lin.bias.detach())
    return unet


register_io_hook(IOHook("quant-dynamic", record=_record, unwrap=_unwrap, finish=_finish))
