"""Unstructured (weight) pruning: zero individual Conv2d / Linear weights with
``torch.nn.utils.prune`` masks.

The masks are reparametrisations (``weight = weight_orig * weight_mask``, recomputed before each
forward), so they survive later fine-tuning: masked weights stay exactly zero whatever the
optimizer does to ``weight_orig``. :func:`masks` reads them, :func:`apply_masks` (re-)applies or
replaces them (e.g. a fine-tune stage regrowing weights), :func:`make_permanent` folds them into
plain weights before export.

Methods (``METHODS``, the extension point: a score function per weight, where the lowest
scores are zeroed, and the scope of the ranking):

- ``l1``: layer-wise magnitude |w|: each layer loses exactly ``round(ratio · n)`` weights.
- ``global``: global magnitude |w|: the lowest ``ratio`` of all selected weights, wherever they are.
- ``random``: layer-wise, uniformly random scores.
- ``tiny-diffusion`` (after "Towards Tiny Diffusion"): layer-wise, I(w) = α|w| + β|∂L/∂w|
  with L the noise-prediction MSE averaged over ``batches`` batches of ``batch_size`` images,
  each at a uniformly random timestep with fresh noise; with β = 0 it selects exactly like
  ``l1``.

Weights already masked by an earlier stage are zeroed first, so ``ratio`` is the sparsity
reached (never less than the one the model already had). Layers: every Conv2d and Linear
weight except those of the ``protect`` sets. Sparse weights do not make dense kernels faster:
MACs and latency are unchanged (a note is added to the state).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Tuple

from .._lazy import nn, size, torch, torch_prune
from ..errors import LiteDiffError
from ..progress import Progress, report
from ._common import (PROTECT_SETS, accumulate_gradients, all_submodules, eval_mode,
                      image_sampler, protected_modules)
from ._io_hooks import require_torch_weights
from .base import CompressState, Stage, clone_model, option

NOTE = ("unstructured sparsity: the zeros shrink a compressed file, but dense MACs and dense "
        "latency do not change")


@dataclass(frozen=True)
class Method:
    score: Callable  # (weight, grad or None, config, generator) -> tensor shaped like weight
    scope: str = "layer"          # "layer": ratio per layer | "global": ratio over all layers
    gradients: bool = False       # needs the loss gradient (``grad``) of each weight


METHODS = {
    "l1": Method(lambda w, g, c, gen: w.abs()),
    "global": Method(lambda w, g, c, gen: w.abs(), scope="global"),
    "random": Method(lambda w, g, c, gen: torch.rand(w.shape, generator=gen)),
    "tiny-diffusion": Method(lambda w, g, c, gen: c.alpha * w.abs() + c.beta * g.abs(),
                             gradients=True),
}


class UnstructuredPrune(Stage):
    """Zero individual weights behind persistent masks; see the module docstring."""

    name = "unstructured-prune"
    family = "unstructured"
    headline = ("method", "ratio")
    previewable = True

    @dataclass
    class Config:
        ratio: float = option(0.5, "fraction of weights zeroed (per layer, or overall for "
                                   "global)", low=0.0, high=1.0, open_high=True, widget="slider")
        method: str = option("l1", "how weights are ranked", METHODS)
        protect: Tuple[str, ...] = option(("time_embedding",), "modules left dense",
                                          PROTECT_SETS)
        alpha: float = option(1.0, "tiny-diffusion: weight of |w|", low=0.0)
        beta: float = option(1.0, "tiny-diffusion: weight of |dL/dw|", low=0.0)
        batches: int = option(4, "tiny-diffusion: batches of images for the gradients", low=1)
        batch_size: int = option(32, "tiny-diffusion: images per batch", low=1)
        seed: int = option(0, "seed of random scores, images, timesteps and noise")

    def preview(self, state, notes):
        """Gradient rankings need data: previewed with L1 ranking (same zeros per layer)."""
        if self.config.method == "tiny-diffusion":
            notes.append("tiny-diffusion ranking needs gradients: predicted with l1 ranking "
                         "(same number of zeros per layer)")
            return type(self)({**asdict(self.config), "method": "l1"}).apply(state)
        return self.apply(state)

    def check(self) -> None:
        c = self.config
        if c.method == "tiny-diffusion" and c.alpha == c.beta == 0:
            raise LiteDiffError(f"{self.name}: alpha and beta must not both be 0")

    def transform(self, state: CompressState, progress: Optional[Progress] = None, data=None):
        """Mask a copy of ``state.unet``. ``data`` (else ``state.data``) feeds the gradient
        methods."""
        c, method = self.config, METHODS[self.config.method]
        require_torch_weights(state.unet, self.name)
        unet = clone_model(state.unet)
        layers = prunable_layers(unet, c.protect)
        if not layers:
            raise LiteDiffError(f"{self.name}: every layer is protected, nothing to prune")
        generator = torch.Generator().manual_seed(c.seed)
        grads: Dict[str, torch.Tensor] = {}
        if method.gradients and c.ratio > 0:
            draw = image_sampler(data if data is not None else state.data, unet,
                                 f"{self.name} ({c.method})")
            with eval_mode(unet):
                accumulate_gradients(unet, state.scheduler, draw, c.batches, c.batch_size,
                                     generator, progress, f"{self.name} ({c.method})")
            grads = {n: (_param(m).grad.detach().clone() if _param(m).grad is not None
                         else torch.zeros_like(_param(m))) for n, m in layers.items()}
            unet.zero_grad(set_to_none=True)
        with torch.no_grad():
            scores = {}
            for n, m in layers.items():
                s = method.score(_weight(m), grads.get(n), c, generator).float()
                if torch_prune.is_pruned(m) and hasattr(m, "weight_mask"):
                    s = s.masked_fill(m.weight_mask == 0, float("-inf"))  # already pruned first
                scores[n] = s
            new = (_global_masks(scores, c.ratio) if method.scope == "global"
                   else {n: _lowest_zeroed(s, c.ratio) for n, s in scores.items()})
        for n, m in layers.items():
            torch_prune.custom_from_mask(m, "weight", new[n].to(_param(m).dtype))
        report(progress, 1, 1, f"{self.name}: done")
        total = sum(int(m.weight_mask.numel()) for m in layers.values())
        zeros = sum(int((m.weight_mask == 0).sum()) for m in layers.values())
        state.note(NOTE)
        return unet, {"layers": len(layers), "sparsity": zeros / total,
                      "params": size.count_params(unet), "nonzero_params": size.count_nonzero(unet)}


# ----------------------------------------------------------------------------- masks

def prunable_layers(unet: nn.Module, protect=()) -> Dict[str, nn.Module]:
    """Name -> module of every Conv2d / Linear outside the protected sets."""
    protected = all_submodules(protected_modules(unet, protect))
    return {n: m for n, m in unet.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in protected}


def masks(unet: nn.Module) -> Dict[str, torch.Tensor]:
    """``"<module>.weight"`` -> bool mask (True = kept) of every masked weight."""
    return {f"{n}.weight": m.weight_mask.detach().bool().cpu()
            for n, m in unet.named_modules() if hasattr(m, "weight_mask")}


def apply_masks(unet: nn.Module, mask_dict: Dict[str, torch.Tensor],
                replace: bool = False) -> nn.Module:
    """Mask weights (``"<module>.weight"`` -> mask, nonzero = kept). A weight that is already
    masked keeps the product of both masks, or exactly the new mask with ``replace=True``
    (regrowth: unmasked weights come back with their ``weight_orig`` values)."""
    for key, mask in mask_dict.items():
        name, _, attr = key.rpartition(".")
        if attr != "weight":
            raise LiteDiffError(f"masks hold weights only, not {key!r}")
        try:
            module = unet.get_submodule(name)
        except AttributeError:
            raise LiteDiffError(f"the model has no layer {name!r} to mask") from None
        if tuple(mask.shape) != tuple(_param(module).shape):
            raise LiteDiffError(f"mask of {key} is {tuple(mask.shape)}, the weight "
                                f"{tuple(_param(module).shape)}")
        mask = (mask != 0).to(_param(module).dtype).to(_param(module).device)
        if replace and hasattr(module, "weight_mask"):
            with torch.no_grad():
                module.weight_mask.copy_(mask)
                module.weight = module.weight_orig * module.weight_mask
        else:
            torch_prune.custom_from_mask(module, "weight", mask)
    return unet


def make_permanent(unet: nn.Module) -> nn.Module:
    """Fold every mask into its weight (plain ``weight`` parameters again, zeros kept); in place."""
    for m in unet.modules():
        if hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")
    return unet


def _param(module: nn.Module) -> torch.nn.Parameter:
    return module.weight_orig if hasattr(module, "weight_orig") else module.weight


def _weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass uses (mask applied)."""
    w = _param(module).detach()
    return w * module.weight_mask if hasattr(module, "weight_mask") else w


def _lowest_zeroed(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """A 0/1 mask zeroing exactly ``round(ratio · n)`` entries: those with the lowest scores."""
    mask = torch.ones(scores.numel())
    k = round(ratio * scores.numel())
    if k:
        mask[torch.topk(scores.flatten(), k, largest=False).indices] = 0
    return mask.view_as(scores)


def _global_masks(scores: Dict[str, torch.Tensor], ratio: float) -> Dict[str, torch.Tensor]:
    flat = _lowest_zeroed(torch.cat([s.flatten() for s in scores.values()]), ratio)
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = flat[start:start + s.numel()].view_as(s)
        start += s.numel()
    return out
