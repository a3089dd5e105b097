"""Model size: parameters, non-zero parameters, bytes on disk and MACs per image.

MACs are counted by fvcore's ``FlopCountAnalysis``, which counts one fused multiply-add as one
"flop", i.e. it counts MACs. We keep only the operators that are multiply-accumulates —
convolutions, linear layers, matrix products and attention (``scaled_dot_product_attention``,
which fvcore 0.1.5 does not know; we add a handle) — and drop fvcore's default counters for
normalisation and upsampling, which are element-wise work, not MACs (< 1 % of a UNet).

MACs say nothing certain about speed: measure it with :mod:`litediff_core.metrics.speed`.
"""

from __future__ import annotations

import logging
import warnings
from math import prod
from typing import Optional, Tuple

import pandas as pd
import torch
import torch.nn as nn
from safetensors.torch import save as safetensors_save

from ..errors import MetricError


# ----------------------------------------------------------------------------- parameters & bytes

def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once; dynamically quantized int8 weights
    count too)."""
    return sum(p.numel() for p in _float_view(model).parameters())


def _effective_parameters(module: nn.Module, recurse: bool = True):
    """(name, tensor) of each parameter as the forward pass sees it: a parameter reparametrised
    by ``torch.nn.utils.prune`` (``weight_orig`` + buffer ``weight_mask``) is multiplied by its mask."""
    for name, p in module.named_parameters(recurse=recurse):
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if leaf.endswith("_orig") and hasattr(owner, leaf[:-5] + "_mask"):
            yield name, p.detach() * getattr(owner, leaf[:-5] + "_mask")
        else:
            yield name, p.detach()


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero (pruning masks applied)."""
    return sum(int(torch.count_nonzero(t)) for _, t in _effective_parameters(_float_view(model)))


def model_bytes(model: nn.Module) -> int:
    """Size in bytes of the model's state dict serialised as safetensors (its size on disk,
    header included). Tensors sharing memory are stored once, as ``safetensors.torch.save_model``
    does. Quantized tensors (e.g. PyTorch dynamic int8 Linear weights, kept in packed params)
    count as their integer values plus their scales and zero points."""
    tensors, seen = {}, set()

    def add(name, t):
        if t.is_quantized:
            add(name + ".int", t.int_repr())
            if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                add(name + ".scale", t.q_per_channel_scales().float())
                add(name + ".zero_point", t.q_per_channel_zero_points())
            else:
                add(name + ".scale", torch.tensor([t.q_scale()], dtype=torch.float32))
            return
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:
            return
        seen.add(key)
        tensors[name] = t.detach().cpu().contiguous()

    state = model.state_dict()
    for name, t in state.items():
        if name.endswith("_mask") and name[:-5] + "_orig" in state:
            continue  # torch.nn.utils.prune: weight_orig × weight_mask is stored as one weight
        if isinstance(t, torch.Tensor):
            add(name[:-5] if name.endswith("_orig") and name[:-5] + "_mask" in state else name, t)
        elif isinstance(t, (tuple, list)) and all(x is None or isinstance(x, torch.Tensor)
                                                  for x in t):
            for i, x in enumerate(t):  # packed params: (weight, bias)
                if x is not None:
                    add(f"{name}.{i}", x)
        elif not isinstance(t, torch.dtype):
            raise MetricError(f"cannot measure the size of {type(model).__name__}: state dict "
                              f"entry {name!r} is a {type(t).__name__}, not a tensor")
    try:
        return len(safetensors_save(tensors))
    except Exception as e:  # unsupported dtype
        raise MetricError(f"cannot serialise {type(model).__name__} as safetensors: {e}") from None


# ----------------------------------------------------------------------------- MACs (fvcore)

def _sdpa_macs(inputs, outputs) -> int:
    """MACs of ``aten::scaled_dot_product_attention``: Q·Kᵀ (L×S×E) plus attention·V (L×S×Ev)."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = prod(q[:-2])
    length, source = q[-2], k[-2]
    return batch * length * source * (q[-1] + v[-1])


def _baddbmm_macs(inputs, outputs) -> int:
    """MACs of ``aten::baddbmm(input, batch1, batch2)`` (diffusers' non-SDPA attention)."""
    from fvcore.nn.jit_handles import get_shape

    b, n, m = get_shape(inputs[1])
    return b * n * m * get_shape(inputs[2])[-1]


def _no_macs(inputs, outputs) -> int:
    return 0


NOT_MACS = ("aten::batch_norm", "aten::group_norm", "aten::layer_norm", "aten::instance_norm",
            "aten::upsample_nearest2d", "aten::upsample_bilinear2d", "aten::adaptive_avg_pool2d",
            "aten::grid_sampler")


class _Call(nn.Module):
    """Calls the model with tensors in and one tensor out, as the JIT tracer needs: a diffusers
    UNet as ``unet(sample, timestep)``, any other module as ``model(sample)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        out = self.model(*inputs, return_dict=False) if len(inputs) == 2 else self.model(*inputs)
        return out[0] if isinstance(out, (tuple, list)) else out


def _trace_inputs(model: nn.Module, resolution: Optional[int], sample_shape) -> tuple:
    """A 1×C×H×W sample (from the diffusers config, or ``sample_shape``) and, for a UNet, a timestep."""
    p = next(model.parameters(), None)
    device, dtype = (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)
    if sample_shape is not None:
        return (torch.randn(1, *sample_shape, device=device, dtype=dtype),)
    config = getattr(model, "config", None)
    if config is None or "in_channels" not in config:
        raise MetricError(f"{type(model).__name__} has no diffusers config with in_channels and "
                          f"sample_size: pass sample_shape=(C, H, W) to count its MACs")
    size = resolution or config["sample_size"]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (torch.randn(1, config["in_channels"], h, w, device=device, dtype=dtype),
            torch.tensor([500], device=device))


def _float_view(model: nn.Module) -> nn.Module:
    """``model`` itself, or — when it holds dynamically quantized Linear layers, which the JIT
    tracer cannot follow — a copy with those layers back as float ``nn.Linear`` of the same names
    and shapes (quantization changes how MACs are computed, not how many there are)."""
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    except ImportError:  # pragma: no cover
        return model
    names = [n for n, m in model.named_modules() if isinstance(m, DynamicLinear)]
    if not names:
        return model
    import copy

    view = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = view.get_submodule(parent_name) if parent_name else view
        q = getattr(parent, child)
        weight, bias = q.weight().dequantize(), q.bias()
        lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            lin.weight.copy_(weight)
            if bias is not None:
                lin.bias.copy_(bias)
        setattr(parent, child, lin)
    return view


def _flop_analysis(model: nn.Module, resolution: Optional[int] = None, sample_shape=None):
    """fvcore analysis of one forward on one image (a UNet gets a timestep too); silenced."""
    model = _float_view(model)
    with warnings.catch_warnings():  # fvcore's import uses the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(_Call(model), _trace_inputs(model, resolution, sample_shape))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    for op in NOT_MACS:  # a zero handle: fvcore's set_op_handle(op, None) keeps default handles
        analysis.set_op_handle(op, _no_macs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
    analysis.set_op_handle("aten::baddbmm", _baddbmm_macs)
    fvcore_logger = logging.getLogger("fvcore")
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis.total()  # runs the trace once; results are memoised
    finally:
        fvcore_logger.setLevel(level)
    return analysis


def _by_module(analysis) -> dict:
    """MACs per module name of the model (the tracing wrapper's prefix removed; "" is the model)."""
    out = {}
    for name, macs in analysis.by_module().items():
        if name == "model" or name.startswith("model."):
            out[name[len("model."):]] = macs
    return out


def macs_per_image(model: nn.Module, resolution: Optional[int] = None,
                   sample_shape: Optional[Tuple[int, int, int]] = None) -> int:
    """Multiply-accumulates of one forward on one image: for a diffusers UNet one denoising step
    at its ``sample_size`` (or ``resolution``); for another module, ``model(x)`` with x of
    ``sample_shape`` (C, H, W)."""
    return int(_flop_analysis(model, resolution, sample_shape).total())


# ----------------------------------------------------------------------------- per-layer table

def layer_table(unet: nn.Module, resolution: Optional[int] = None,
                sample_shape: Optional[Tuple[int, int, int]] = None) -> pd.DataFrame:
    """One row per leaf module, in the order modules appear, with columns name, type, shape
    (weight shape), params, nonzeros, sparsity and macs (per image).

    A non-leaf module gets a row too when it owns parameters or MACs of its own, outside its
    children (e.g. an attention block's Q·Kᵀ and attention·V products), so that every column
    sums exactly to the model's totals.
    """
    unet = _float_view(unet)
    macs = _by_module(_flop_analysis(unet, resolution, sample_shape))
    rows = []
    for name, module in unet.named_modules():
        children = [f"{name}.{c}" if name else c for c, _ in module.named_children()]
        own_macs = macs.get(name, 0) - sum(macs.get(c, 0) for c in children)
        own = list(_effective_parameters(module, recurse=False))
        params = sum(t.numel() for _, t in own)
        if children and params == 0 and own_macs == 0:
            continue
        nonzeros = sum(int(torch.count_nonzero(t)) for _, t in own)
        weight = getattr(module, "weight", None)
        rows.append({
            "name": name or "(top level)",
            "type": type(module).__name__,
            "shape": "×".join(map(str, weight.shape)) if isinstance(weight, torch.Tensor) else "",
            "params": params,
            "nonzeros": nonzeros,
            "sparsity": 1.0 - nonzeros / params if params else 0.0,
            "macs": int(own_macs),
        })
    return pd.DataFrame(rows, columns=["name", "type", "shape", "params", "nonzeros",
                                       "sparsity", "macs"])


def size_report(unet: nn.Module, resolution: Optional[int] = None,
                sample_shape: Optional[Tuple[int, int, int]] = None) -> dict:
    """Parameters, non-zero parameters, safetensors bytes and MACs per image of a UNet.

    A wrapper that runs elsewhere (e.g. the ONNX Runtime int8 UNet) reports its own figures
    through a ``size_report()`` method."""
    if callable(getattr(unet, "size_report", None)):
        return unet.size_report()
    return {
        "params": count_params(unet),
        "nonzero_params": count_nonzero(unet),
        "bytes": model_bytes(unet),
        "macs_per_image": macs_per_image(unet, resolution, sample_shape),
    }
