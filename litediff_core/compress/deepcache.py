"""DeepCache: reuse the deep UNet features across adjacent sampling steps (training-free).

Ma, Fang & Wang, "DeepCache: Accelerating Diffusion Models for Free", CVPR 2024. In a UNet the
deep, low-resolution part changes slowly from one denoising step to the next, while the shallow
skip branches carry the detail. Every ``interval`` steps the whole UNet runs and the input of
the up block that closes skip branch ``branch`` is kept; on the steps between, only the shallow
part runs: ``conv_in``, down blocks ``0..branch``, the cached deep feature, then up blocks
``L-1-branch..L-1`` and the output layers (``L`` = number of levels). ``branch=0`` recomputes
only the top (full-resolution) level, the cheapest and coarsest setting.

The ``deepcache`` PyPI package patches ``UNet2DConditionModel`` pipelines (Stable Diffusion),
not ``UNet2DModel``, so the cached forward is written here on diffusers' own blocks. The stage
changes no weight: it wraps the model (``DeepCacheUNet``), which counts its calls and starts a
new trajectory whenever the timestep does not fall (samplers visit timesteps in falling order)
or the batch changes; :func:`~litediff_core.samplers.generate` also resets it per batch. In
training mode every call runs the whole UNet. Per-step latency is therefore the full step's;
what caching buys shows in the time and MACs per *image* (``cached_step_macs``).

Refused: a model whose graph runs whole elsewhere (ONNX Runtime), UNets with skip-connection
blocks (``SkipDownBlock2D``...) or class conditioning, and ``branch`` at the deepest level
(nothing left to cache). It must be the last stage of a recipe, and ``interval`` must be below
the recipe's sampling steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from .._lazy import exported_from
from ..errors import LiteDiffError
from ..progress import Progress, report
from ._io_hooks import IOHook, register_io_hook
from .base import CompressState, Stage, option


# the caching UNet (an nn.Module: torch) is imported where it is used
__getattr__ = exported_from(__name__, __package__, dict.fromkeys(
    ("DeepCacheUNet", "check_cacheable", "cached_step_macs"), "._deepcache_unet"))


class DeepCache(Stage):
    """Feature caching across sampling steps (DeepCache); see the module docstring."""

    name = "deepcache"
    family = "sampling"
    headline = ("interval",)
    must_be_last: ClassVar[bool] = True

    @dataclass
    class Config:
        interval: int = option(3, "run the whole UNet every N steps and reuse its deep "
                                  "features in between", low=2)
        branch: int = option(0, "skip branch kept live on cached steps: 0 = only the "
                                "full-resolution level (fastest), higher = more levels", low=0)

    def check(self) -> None:
        """Ranges are declared with the options; the branch's upper bound depends on the
        architecture and is checked in :meth:`apply`."""

    def check_sampling(self, steps: int) -> None:
        if self.config.interval >= steps:
            raise LiteDiffError(f"deepcache: interval {self.config.interval} must be below the "
                                f"sampling steps ({steps}), or only the first step is computed")

    def transform(self, state: CompressState, progress: Optional[Progress] = None):
        """Wrap ``state.unet`` (its weights are shared, not changed) in a caching UNet."""
        from ._deepcache_unet import DeepCacheUNet

        c = self.config
        report(progress, 0, 1, f"{self.name}: wrapping")
        wrapped = DeepCacheUNet(state.unet, c.interval, c.branch).eval()
        full = wrapped.size_report()
        share = full["cached_step_macs"] / full["macs_per_image"]
        state.note(f"deepcache: every {c.interval} steps the whole UNet runs; the steps between "
                   f"reuse its deep features and cost {share:.0%} of a full step's MACs. No "
                   f"weight changes: per-step latency is a full step's, the gain is per image")
        report(progress, 1, 1, f"{self.name}: done")
        return wrapped, {"cached_step_macs_fraction": share}


# ----------------------------------------------------------------------------- saving

def _is_cached(model) -> bool:
    from ._deepcache_unet import DeepCacheUNet  # a model exists: torch is loaded

    return isinstance(model, DeepCacheUNet)


def _unwrap(model):
    return model.unet if _is_cached(model) else None


def _record(model, folder) -> Optional[dict]:
    if not _is_cached(model):
        return None
    return {"interval": model.interval, "branch": model.branch}


def _finish(unet, record, folder):
    from ._deepcache_unet import DeepCacheUNet

    return DeepCacheUNet(unet, record["interval"], record["branch"]).eval()


register_io_hook(IOHook("deepcache", record=_record, unwrap=_unwrap, finish=_finish))
