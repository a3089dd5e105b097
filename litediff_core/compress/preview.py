"""What a recipe will make of a model's size, before it runs: each stage's
:meth:`~.base.Stage.preview` on a copy of the base, on the CPU, without data or training."""

from __future__ import annotations

from typing import Iterable

from .base import CompressState, clone_model


def preview_size(unet, scheduler, stages: Iterable[dict], dataset=None) -> dict:
    """``{"size": size_report, "applied": [...], "skipped": [...], "notes": [...]}`` for the
    recipe ``stages`` (``{"stage", "config"}`` dicts) applied to a copy of ``unet``: stages whose
    size is known only after they run (training keeps it; quantization stores it differently)
    are skipped and named; previews made with a stand-in say so in ``notes``."""
    from ..metrics import size_report
    from . import make_stage

    copy = clone_model(unet).cpu()  # the one copy (the caller's model may live on a GPU):
    # stages transform copies of their own, so it can serve as student and teacher both
    state = CompressState(unet=copy, scheduler=scheduler, teacher=copy, dataset=dataset)
    applied, skipped, notes = [], [], []
    for spec in stages:
        stage = make_stage(spec)
        if not stage.can_preview():
            skipped.append(stage.name)
            continue
        state = stage.preview(state, notes)
        applied.append(stage.name)
    return {"size": size_report(state.unet), "applied": applied, "skipped": skipped,
            "notes": notes}
