"""Low-rank factorisation of Conv2d / Linear weights by truncated SVD.

This is *not* LoRA: LoRA adds a trainable low-rank update beside a frozen full weight (the model
grows); here the full weight is *replaced* by its best rank-r approximation, stored as two
smaller layers, so the model really shrinks:

- Linear in→out (W: out×in) becomes Linear in→r (no bias) then Linear r→out (with the bias);
- Conv2d k×k in→out becomes a k×k Conv2d in→r (the original stride, padding, dilation; no
  bias) then a 1×1 Conv2d r→out (with the bias), from the SVD of W reshaped to out×(in·k·k).

With W ≈ U_r S_r V_rᵀ the first layer gets S_r^½ V_rᵀ and the second U_r S_r^½ (Eckart–Young:
the smallest Frobenius error of any rank-r matrix). Weights per layer fall from out·in·k² to
r·(in·k² + out), and so do the MACs per output pixel: a real cut, counted as such by fvcore.
At full rank (r = min(out, in·k²)) the layer is reproduced exactly (up to float rounding).

Rank per layer: ``rank`` if > 0 (capped at the full rank), else ``full_rank // factor`` (at
least 1). A layer is replaced only where it saves at least ``min_params_saving`` of its weights
(and always strictly some): factorising a small or thin layer can *add* parameters. The
``protect`` sets (time embedding, first/last conv by default) are left alone, as are layers
already factorised. A masked (unstructured-pruned) layer is factorised from its masked weight
and loses its sparsity. Quality drops with the rank: fine-tune afterwards; and measure latency,
two thin layers are not always faster than one on a CPU.

Saving: the layers' names and ranks go to ``pruning_history.json`` through an IO hook
(:mod:`._io_hooks`); loading rebuilds the factorised layers before loading the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .._lazy import exported_from, nn
from ..errors import LiteDiffError
from ..progress import Progress, report
from ._common import PROTECT_SETS, all_submodules, protected_modules
from ._io_hooks import IOHook, register_io_hook, require_torch_weights
from .base import CompressState, Stage, clone_model, option

LAYER_KINDS = ("conv", "linear")

NOTE = ("low-rank factorisation (truncated SVD, not LoRA): fewer parameters and MACs, but the "
        "outputs change; fine-tune afterwards and measure latency (two thin layers are not "
        "always faster than one on a CPU)")
# the factorised layers (nn.Module: torch) are imported where they are used
__getattr__ = exported_from(__name__, __package__, dict.fromkeys((
    "LowRankConv2d", "LowRankLinear", "LOW_RANK_TYPES", "full_rank", "factorised_weight_count",
    "factorise", "low_rank_layers"), "._lowrank_layers"))


class LowRank(Stage):
    """Replace Conv2d / Linear layers by two smaller ones (truncated SVD); see the module
    docstring."""

    name = "low-rank"
    family = "low-rank"
    headline = ("rank", "factor")
    previewable = True

    @dataclass
    class Config:
        factor: float = option(4.0, "rank = full rank / factor where rank is 0", low=1.0)
        rank: int = option(0, "explicit rank for every layer (capped at its full rank); "
                              "0 = use factor", low=0)
        min_params_saving: float = option(0.1, "replace a layer only where it loses at least "
                                               "this fraction of its weights",
                                         low=0.0, high=1.0, open_high=True, widget="slider")
        layers: Tuple[str, ...] = option(LAYER_KINDS, "layer types factorised", LAYER_KINDS)
        protect: Tuple[str, ...] = option(("time_embedding", "first_last_conv"),
                                          "modules left as they are", PROTECT_SETS)

    def check(self) -> None:
        """Ranges are declared with the options."""

    def layer_rank(self, layer: nn.Module) -> int:
        from ._lowrank_layers import full_rank

        full = full_rank(layer)
        if self.config.rank > 0:
            return min(self.config.rank, full)
        return max(1, int(full // self.config.factor))

    def transform(self, state: CompressState, progress: Optional[Progress] = None):
        """Factorise a copy of ``state.unet``."""
        from ..metrics.size import count_params
        from ._lowrank_layers import (LOW_RANK_TYPES, factorise, factorised_weight_count,
                                      full_rank, set_submodule)

        c = self.config
        require_torch_weights(state.unet, self.name)
        unet = clone_model(state.unet)
        params_before = count_params(unet)
        kinds = tuple({"conv": nn.Conv2d, "linear": nn.Linear}[k] for k in c.layers)
        skip = all_submodules(protected_modules(unet, c.protect))
        skip |= all_submodules(m for m in unet.modules() if isinstance(m, LOW_RANK_TYPES))
        candidates = [(n, m) for n, m in unet.named_modules()
                      if isinstance(m, kinds) and m not in skip]
        rows, lost_masks = [], 0
        for i, (name, layer) in enumerate(candidates):
            rank = self.layer_rank(layer)
            dense = layer.weight.numel()
            after = factorised_weight_count(layer, rank)
            saving = 1.0 - after / dense
            if saving <= 0 or saving < c.min_params_saving:
                continue
            new, kept = factorise(layer, rank, layer.weight.detach())  # masked weight if any
            new.train(layer.training)
            lost_masks += hasattr(layer, "weight_mask")
            set_submodule(unet, name, new)
            rows.append({"name": name, "type": type(layer).__name__,
                         "shape": list(layer.weight.shape), "rank": rank,
                         "full_rank": full_rank(layer), "weights_before": dense,
                         "weights_after": after, "energy_kept": round(kept, 6)})
            report(progress, i + 1, len(candidates), f"{self.name}: {name} -> rank {rank}")
        if rows:
            state.note(NOTE)
        else:
            state.note(f"{self.name}: no layer saved at least {c.min_params_saving:.0%} of its "
                       f"weights at this rank; nothing was factorised")
        if lost_masks:
            state.note(f"{self.name}: {lost_masks} masked layers were factorised from their "
                       f"masked weights; their sparsity is gone")
        return unet, {"layers": len(rows), "params_before": params_before,
                      "params_after": count_params(unet), "factorised": rows}


# ----------------------------------------------------------------------------- saving

def _record(model, folder) -> Optional[dict]:
    from ._lowrank_layers import low_rank_layers

    layers = low_rank_layers(model) if isinstance(model, nn.Module) else {}
    return {"layers": layers} if layers else None


def _rebuild(unet, record, folder):
    from ._lowrank_layers import LowRankConv2d, LowRankLinear, set_submodule

    for name, rank in record["layers"].items():
        try:
            dense = unet.get_submodule(name)
        except AttributeError:
            raise LiteDiffError(f"low-rank: the saved model has no layer {name!r}") from None
        cls = LowRankConv2d if isinstance(dense, nn.Conv2d) else LowRankLinear
        set_submodule(unet, name, cls(dense, int(rank)))
    return unet


register_io_hook(IOHook("low-rank", record=_record, rebuild=_rebuild))
