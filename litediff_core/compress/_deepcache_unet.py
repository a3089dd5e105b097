"""The caching UNet of the ``deepcache`` stage (see :mod:`.deepcache`): an ``nn.Module``, kept
apart so that the stage registry loads without torch."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import LiteDiffError
from ._io_hooks import require_torch_weights


class DeepCacheUNet(nn.Module):
    """A ``UNet2DModel`` called as usual, ``unet(sample, timestep).sample``, that recomputes its
    deep part only every ``interval`` calls of a trajectory (see the module docstring)."""

    def __init__(self, unet: nn.Module, interval: int, branch: int):
        super().__init__()
        check_cacheable(unet, branch)
        self.unet, self.interval, self.branch = unet, int(interval), int(branch)
        self.reset_cache()

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self):
        return self.unet.dtype

    @property
    def device(self):
        return self.unet.device

    def reset_cache(self) -> None:
        """Forget the cached feature: the next call runs the whole UNet."""
        self._cache, self._calls, self._last = None, 0, None

    def forward(self, sample, timestep, return_dict: bool = True, **unused):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        if self.training or self._last is None or t >= self._last[0] or \
                sample.shape != self._last[1]:
            self.reset_cache()  # a new trajectory (or training): start with a full step
        full = self.training or self._cache is None or self._calls % self.interval == 0
        self._calls, self._last = self._calls + 1, (t, sample.shape)
        out = self.cached_forward(sample, timestep, full)
        return UNet2DOutput(sample=out) if return_dict else (out,)

    def cached_forward(self, sample, timestep, full: bool) -> torch.Tensor:
        """One step: the whole UNet (``full``, refreshing the cache) or its shallow part."""
        u = self.unet
        if u.config.center_input_sample:
            sample = 2 * sample - 1.0
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1)
        t = t * torch.ones(sample.shape[0], dtype=t.dtype, device=t.device)
        emb = u.time_embedding(u.time_proj(t).to(dtype=u.dtype))
        h = u.conv_in(sample)
        res = (h,)
        levels = len(u.down_blocks)
        deep_from = levels - 1 - self.branch      # first up block that runs on a cached step
        for i, block in enumerate(u.down_blocks):
            if not full and i > self.branch:
                break
            h, r = block(hidden_states=h, temb=emb)
            res += r
        if full:
            if u.mid_block is not None:
                h = u.mid_block(h, emb)
            for block in u.up_blocks[:deep_from]:
                n = len(block.resnets)
                h, res = block(h, res[-n:], emb), res[:-n]
            self._cache = h
        else:
            # keep the skip samples the remaining up blocks take (the last down block run
            # also gave its downsampled output, which only the deep part reads)
            res, h = res[:_skips_for_shallow(u, deep_from)], self._cache
        for block in u.up_blocks[deep_from:]:
            n = len(block.resnets)
            h, res = block(h, res[-n:], emb), res[:-n]
        h = u.conv_out(u.conv_act(u.conv_norm_out(h)))
        if u.config.time_embedding_type == "fourier":
            h = h / t.reshape((h.shape[0], *([1] * (h.ndim - 1))))
        return h

    def size_report(self) -> dict:
        """The wrapped UNet's size, plus the MACs of a cached (shallow) step per image."""
        from ..metrics import size_report

        report_ = size_report(self.unet)
        return {**report_, "cached_step_macs": cached_step_macs(self.unet, self.branch)}


def _res_count(unet, levels: int) -> int:
    """Skip samples that ``conv_in`` and the first ``levels`` down blocks give."""
    return 1 + sum(len(b.resnets) + (1 if getattr(b, "downsamplers", None) else 0)
                   for b in unet.down_blocks[:levels])


def _skips_for_shallow(unet, deep_from: int) -> int:
    """How many skip samples are left for up blocks ``deep_from..`` in a full forward."""
    return _res_count(unet, len(unet.down_blocks)) - sum(len(b.resnets)
                                                         for b in unet.up_blocks[:deep_from])


def check_cacheable(unet, branch: int) -> None:
    """Refuse (LiteDiffError) a model whose architecture the cached forward cannot honour."""
    require_torch_weights(unet, "deepcache")
    if isinstance(unet, DeepCacheUNet):
        raise LiteDiffError("deepcache: the model is already cached")
    needed = ("down_blocks", "up_blocks", "conv_in", "time_embedding", "conv_out")
    if not all(hasattr(unet, a) for a in needed):
        raise LiteDiffError(f"deepcache: needs a diffusers UNet2DModel, not {type(unet).__name__}")
    if any(hasattr(b, "skip_conv") for b in (*unet.down_blocks, *unet.up_blocks)):
        raise LiteDiffError("deepcache: UNets with skip-connection blocks (SkipDownBlock2D, "
                            "AttnSkipUpBlock2D...) are not supported")
    if getattr(unet, "class_embedding", None) is not None:
        raise LiteDiffError("deepcache: class-conditional UNets are not supported")
    levels = len(unet.down_blocks)
    if not 0 <= int(branch) <= levels - 2:
        raise LiteDiffError(f"deepcache: branch must be between 0 and {levels - 2} for this "
                            f"{levels}-level UNet (branch {levels - 1} is the deepest level: "
                            f"nothing would be cached), not {branch}")


def cached_step_macs(unet, branch: int) -> int:
    """fvcore MACs of one cached (shallow) step on one image."""
    from ..metrics.size import macs_per_image

    # count the shallow step alone: MACs(full + shallow) − MACs(full)
    both = macs_per_image(_Both(unet, branch, shallow=True))
    full = macs_per_image(_Both(unet, branch, shallow=False))
    return int(both - full)


class _Both(nn.Module):
    """A full step, then (``shallow``) a cached step: for counting the cached step's MACs."""

    def __init__(self, unet, branch: int, shallow: bool):
        super().__init__()
        self.wrapped, self.shallow = DeepCacheUNet(unet, 2, branch), shallow

    @property
    def config(self):
        return self.wrapped.config

    def forward(self, sample, timestep, return_dict=False):
        out = self.wrapped.cached_forward(sample, timestep, full=True)
        if self.shallow:
            out = out + self.wrapped.cached_forward(sample, timestep, full=False)
        return (out,)
