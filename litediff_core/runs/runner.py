"""The runner: a recipe's stages applied to its base, the model saved, measured, and the run
folder renamed into place (a failure is stored with its error and no model)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from .. import __version__
from ..errors import LiteDiffError
from ..fileio import replace_dir
from ..progress import Progress, prefixed, report
from ..recipes import Recipe
from ..results import RecoveryCurve, StageTime
from .measure import measure
from .store import METRICS, MODEL, RECIPE, STATUS, RunStore, _write_json

def run_recipe(recipe: Recipe, store: RunStore, progress: Optional[Progress] = None,
               device: str = "auto", force: bool = False, restart: bool = False,
               checkpoint_every_s: float = 60.0,
               checkpoint_every_steps: Optional[int] = None) -> Path:
    """Run ``recipe`` into ``store`` (or return the finished run with the same key).

    Training stages keep a checkpoint in ``<store>/_checkpoints/<id>/`` (every
    ``checkpoint_every_s`` seconds, or every ``checkpoint_every_steps`` steps): a run killed or
    failed mid-way resumes from there when the same recipe runs again (``restart`` discards
    them and starts afresh). They are removed once the run is done."""
    store.clean()
    done = store.find(recipe)
    if done and not force:
        report(progress, 1, 1, "already run: reused")
        return done
    final = store.run_dir(recipe)
    checkpoints = store.checkpoint_dir(final.name)
    if restart or force:
        shutil.rmtree(checkpoints, ignore_errors=True)
    store.root.mkdir(parents=True, exist_ok=True)
    tmp = store.root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _write_json(tmp / RECIPE, recipe.to_dict())
    started = time.time()
    _write_json(tmp / STATUS, {"status": "running", "pid": os.getpid(), "started": started})
    from ..compress._checkpoint import Checkpointing

    keep = Checkpointing(checkpoints, every_s=checkpoint_every_s,
                         every_steps=checkpoint_every_steps)
    from ..compress import make_stage

    if any(make_stage(s).trains for s in recipe.stages):  # what an unfinished run was
        checkpoints.mkdir(parents=True, exist_ok=True)
        _write_json(checkpoints / RECIPE, recipe.to_dict())
    try:
        _execute(recipe, tmp, progress, device, keep)
        status = {"status": "done"}
    except BaseException as e:  # noqa: BLE001 — stored, then re-raised below
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        status = {"status": "failed", "error": f"{type(e).__name__}: {first}"}
        error = e
        shutil.rmtree(tmp / MODEL, ignore_errors=True)  # a failed run keeps no model
    else:
        error = None
    _write_json(tmp / STATUS, {**status, "started": started, "finished": time.time(),
                               "litediff_version": __version__})
    replace_dir(tmp, final)
    if error is not None:
        raise error
    shutil.rmtree(checkpoints, ignore_errors=True)  # done: nothing left to resume
    return final


def _execute(recipe: Recipe, out: Path, progress: Optional[Progress], device: str,
             checkpointing=None) -> None:
    from ..compress import CompressState, make_stage, save_compressed
    from ..data import load_dataset
    from ..device import resolve_device
    from ..models import load_base

    device = resolve_device(device)
    base = load_base(recipe.base)
    dataset = recipe.dataset or base.meta.dataset
    if not dataset:
        raise LiteDiffError(f"{recipe.base}: unknown dataset; set `dataset` in the recipe")
    base.meta.dataset = dataset
    trained = int(base.scheduler.config.num_train_timesteps)
    if recipe.eval["steps"] > trained:
        raise LiteDiffError(f"recipe eval steps {recipe.eval['steps']} exceed the {trained} "
                            f"timesteps {recipe.base} was trained with")
    import torch

    torch.manual_seed(recipe.seed)
    data = load_dataset(dataset, "train") if recipe.stages else None
    state = CompressState.start(base.unet, base.scheduler, dataset=dataset, data=data)
    n_stages = len(recipe.stages)
    timings, recovery = [], []
    with (out / "log.jsonl").open("w") as log:
        for i, spec in enumerate(recipe.stages):
            stage = make_stage(spec)
            t0 = time.time()

            def sub(done, total, message, _i=i, _name=stage.name):
                report(progress, _i * 1000 + int(1000 * done / max(total, 1)),
                       (n_stages + 1) * 1000, prefixed(_name, message))

            if checkpointing is not None and stage.trains:
                state.checkpointing = dataclasses.replace(
                    checkpointing, folder=checkpointing.folder / f"{i}-{stage.name}")
            state = stage.apply(state, sub)
            state.checkpointing = None
            timings.append({"stage": stage.name, "seconds": round(time.time() - t0, 2)})
            entry = state.log[-1] if state.log else {}
            if entry.get("curve"):
                recovery.append(RecoveryCurve(
                    stage_index=i, stage=stage.name, label=entry["curve_label"],
                    points=entry["curve"], reference=entry.get("curve_reference"),
                    resumed_from=entry.get("resumed_from", 0)))
            log.write(json.dumps({**timings[-1], "log": state.log[-1] if state.log else {}},
                                 default=str) + "\n")
    save_compressed(state, out / MODEL, {**_meta_of(base), "recipe": recipe.to_dict()})

    def eval_progress(done, total, message):
        report(progress, n_stages * 1000 + int(1000 * done / max(total, 1)),
               (n_stages + 1) * 1000, f"evaluating: {message}")

    result = measure(base, out / MODEL, recipe, device, out, eval_progress)
    result = dataclasses.replace(
        result, model=MODEL,   # relative to the run folder (measure saw the build folder's)
        recovery=recovery or None, method=recipe.method(),
        stages=[StageTime(**t) for t in timings], notes=list(state.notes),
        train_steps=sum(int(s["config"].get("steps", 0)) for s in recipe.stages
                        if make_stage(s).trains),
        wall_s=round(sum(t["seconds"] for t in timings), 1))
    _write_json(out / METRICS, result.to_dict())


def _meta_of(base) -> dict:
    m = base.meta
    return {"dataset": m.dataset, "resolution": m.resolution, "channels": m.channels,
            "classes": m.classes, "base": m.source}
