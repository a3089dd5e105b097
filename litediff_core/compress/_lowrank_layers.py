"""The factorised layers of the ``low-rank`` stage (see :mod:`.lowrank`) and the SVD that
makes them: ``nn.Module`` code, kept apart so that the stage registry loads without torch."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn

from ..errors import LiteDiffError


class LowRankConv2d(nn.Sequential):
    """A k×k Conv2d in→rank (no bias) followed by a 1×1 Conv2d rank→out (original bias)."""

    def __init__(self, conv: nn.Conv2d, rank: int):
        if conv.groups != 1:
            raise LiteDiffError("low-rank: grouped convolutions are not factorised")
        kw = {"device": conv.weight.device, "dtype": conv.weight.dtype}
        super().__init__(
            nn.Conv2d(conv.in_channels, rank, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, bias=False, padding_mode=conv.padding_mode, **kw),
            nn.Conv2d(rank, conv.out_channels, 1, bias=conv.bias is not None, **kw))

    in_channels = property(lambda self: self[0].in_channels)
    out_channels = property(lambda self: self[1].out_channels)
    rank = property(lambda self: self[0].out_channels)


class LowRankLinear(nn.Sequential):
    """A Linear in→rank (no bias) followed by a Linear rank→out (original bias)."""

    def __init__(self, linear: nn.Linear, rank: int):
        kw = {"device": linear.weight.device, "dtype": linear.weight.dtype}
        super().__init__(nn.Linear(linear.in_features, rank, bias=False, **kw),
                         nn.Linear(rank, linear.out_features, bias=linear.bias is not None, **kw))

    in_features = property(lambda self: self[0].in_features)
    out_features = property(lambda self: self[1].out_features)
    rank = property(lambda self: self[0].out_features)


LOW_RANK_TYPES = (LowRankConv2d, LowRankLinear)


def full_rank(layer: nn.Module) -> int:
    """min(out, in·k·k) of a Conv2d, min(out, in) of a Linear."""
    w = layer.weight
    return min(w.shape[0], w[0].numel())


def factorised_weight_count(layer: nn.Module, rank: int) -> int:
    """Weights (bias excluded) of ``layer`` factorised at ``rank``: rank·(in·k² + out)."""
    w = layer.weight
    return rank * (w[0].numel() + w.shape[0])


@torch.no_grad()
def factorise(layer: nn.Module, rank: int, weight: Optional[torch.Tensor] = None):
    """``(LowRankConv2d | LowRankLinear, kept)``: ``layer`` at ``rank`` by truncated SVD of its
    weight (or of ``weight``, e.g. the masked one); ``kept`` is the fraction of the squared
    Frobenius norm kept (relative weight error = sqrt(1 − kept))."""
    w = (layer.weight if weight is None else weight).detach()
    if not 1 <= rank <= full_rank(layer):
        raise LiteDiffError(f"low-rank: rank {rank} is outside 1..{full_rank(layer)}")
    u, s, vh = torch.linalg.svd(w.reshape(w.shape[0], -1).double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = (root[:, None] * vh[:rank]).to(w.dtype)      # rank × (in·k·k)
    second = (u[:, :rank] * root[None, :]).to(w.dtype)   # out × rank
    if isinstance(layer, nn.Conv2d):
        new = LowRankConv2d(layer, rank)
        new[0].weight.copy_(first.reshape(rank, *w.shape[1:]))
        new[1].weight.copy_(second[:, :, None, None])
    elif isinstance(layer, nn.Linear):
        new = LowRankLinear(layer, rank)
        new[0].weight.copy_(first)
        new[1].weight.copy_(second)
    else:
        raise LiteDiffError(f"low-rank: cannot factorise a {type(layer).__name__}")
    if layer.bias is not None:
        new[1].bias.copy_(layer.bias.detach())
    energy = s.square()
    kept = float(energy[:rank].sum() / energy.sum()) if float(energy.sum()) > 0 else 1.0
    return new, kept


def low_rank_layers(unet: nn.Module) -> Dict[str, int]:
    """Name -> rank of every factorised layer of ``unet``."""
    return {n: m.rank for n, m in unet.named_modules() if isinstance(m, LOW_RANK_TYPES)}


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)
