"""Recovery curves of stored runs, as plain rows for plots and tables.

A training stage run with ``curve_every`` (``compress/_curve.py``) stores its points under the
run's results (``RunResult.recovery``); an unfinished run has them in its training checkpoint
(``<store>/_checkpoints/<id>/``). :func:`recovery_curves` reads both, so a curve shows while its
run is still training (or was stopped, waiting to resume).
"""

from __future__ import annotations

import json
from typing import List

import pandas as pd

from .recipes import Recipe
from .runs import RECIPE, RunStore

POINT_COLUMNS = ["ref", "run", "stage", "label", "status", "step", "train_min", "machine", "fid",
                 "fid_lo", "fid_hi", "eps_mse_teacher", "eps_mse"]


def recovery_curves(store: RunStore, label: str = "") -> List[dict]:
    """One dict per curve: ``ref`` (``<label>:<id>``, or the id), ``run`` (name or method),
    ``stage`` (index-name), ``label`` (the curve's setup), ``status`` ("done" or "unfinished at
    step k"), ``reference`` (the dense teacher at the same setup, or None), ``points``, and
    ``machine``: what trained it where its points do not say (curves stored before points
    named their machine: the CPU or GPU that evaluated the run, in the process that trained
    it; None for checkpoints)."""
    from .compress._checkpoint import read_state

    out = []
    prefix = f"{label}:" if label else ""
    table = store.table()
    for _, row in table[table["status"] == "done"].iterrows():
        run = store.load(row["id"])
        name, result = row["name"] or row["method"], run["result"]
        for c in result.recovery or []:
            out.append({"ref": prefix + row["id"], "run": name,
                        "stage": f"{c.stage_index}-{c.stage}", "label": c.label,
                        "status": "done", "reference": c.reference, "points": c.points,
                        "machine": evaluated_on(result)})
    for run_id, stages in store.checkpoints().items():
        try:
            recipe = json.loads((store.checkpoint_dir(run_id) / RECIPE).read_text())
        except (OSError, ValueError):
            recipe = {}
        for stage_dir, step in stages.items():
            state = read_state(store.checkpoint_dir(run_id) / stage_dir) or {}
            if not state.get("curve"):
                continue
            spec = state["fingerprint"].get("config", {})
            name = recipe.get("name") or (Recipe.from_dict(recipe).method() if recipe else run_id)
            out.append({"ref": prefix + run_id, "run": name,
                        "stage": stage_dir, "label": state.get("curve_label") or _label_of(spec),
                        "status": f"unfinished at step {step} of "
                                  f"{state['fingerprint'].get('steps')}",
                        "reference": None, "points": state["curve"], "machine": None})
    return out


def evaluated_on(result) -> str:
    """The GPU or CPU a run was evaluated on, in the process that trained it: its environment
    (runs stored before the environment named the GPU: the GPU of its first timing, which
    ``litediff runs --remeasure`` keeps in ``latency_history``)."""
    setup, env = result.setup or {}, result.environment
    if str(setup.get("device", "")).startswith("cuda"):
        first = (result.latency_history or [{}])[0].get("base_latency") or (
            result.base_latency.to_dict() if result.base_latency else {})
        return (env.gpu if env else None) or first.get("gpu") or "a GPU"
    return env.cpu if env and env.cpu else None


def trained_on(curve: dict) -> List[str]:
    """The machines a curve's training ran on, in order (one, unless it resumed elsewhere):
    each point's ``machine``, else the curve's (see :func:`recovery_curves`)."""
    return list(dict.fromkeys(_machine(p, curve) for p in curve["points"]))


def _machine(point: dict, curve: dict) -> str:
    return point.get("machine") or curve.get("machine") or "not recorded"


def curves_stamp(store: RunStore) -> tuple:
    """Changes whenever a run lands in ``store`` or a checkpoint is written: a cache key."""
    root = store.checkpoint_dir("x").parent
    paths = [store.root, root] + (sorted(root.glob("*/*/state.json")) if root.is_dir() else [])
    return tuple(f.stat().st_mtime_ns if f.exists() else 0 for f in paths)


def _label_of(config: dict) -> str:
    from .compress._curve import CurveConfig, curve_label

    return curve_label(CurveConfig(n=config.get("curve_samples", 200),
                                   steps=config.get("curve_sampling_steps", 10)))


def points_frame(curves: List[dict]) -> pd.DataFrame:
    """Every point of ``curves`` as one row (columns ``POINT_COLUMNS``)."""
    rows = []
    for c in curves:
        for p in c["points"]:
            rows.append({"ref": c["ref"], "run": c["run"], "stage": c["stage"],
                         "label": c["label"], "status": c["status"], "step": p["step"],
                         "train_min": p["train_s"] / 60,
                         "machine": _machine(p, c),
                         "fid": p["fid"],
                         "fid_lo": p.get("fid_lo"), "fid_hi": p.get("fid_hi"),
                         "eps_mse_teacher": p.get("eps_mse_teacher"), "eps_mse": p.get("eps_mse")})
    return pd.DataFrame(rows, columns=POINT_COLUMNS)
