"""The run store: one folder per recipe run (finished, failed or interrupted), read and listed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional

import pandas as pd

from ..errors import LiteDiffError
from ..fileio import write_json_atomic
from ..recipes import Recipe
from ..results import (Consistency, Fidelity, Latency, PerImage, QualityGate, RunResult,
                       Size)

STATUS, RECIPE, METRICS, LAYERS, GRID, MODEL = ("status.json", "recipe.json", "metrics.json",
                                                "layers.csv", "samples.png", "model")
CHECKPOINTS = "_checkpoints"   # <store>/_checkpoints/<id>/<stage index>-<stage>/ (resumable)


def user_store() -> Path:
    """Where new runs go: ``$LITEDIFF_RUNS`` or ``~/.local/share/litediff/runs``."""
    return Path(os.environ.get("LITEDIFF_RUNS") or os.path.join(
        os.environ.get("XDG_DATA_HOME", os.path.expanduser("~/.local/share")), "litediff", "runs"))


def _write_json(path: Path, data) -> None:
    write_json_atomic(path, data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str) -> Optional[int]:
    """The pid of the process a hidden working folder belongs to: ``.tmp-<id>-<pid>``,
    ``.trash-<id>-<pid>`` (a delete), ``.<id>.old-<pid>`` (a replace); None for other names."""
    if not name.startswith((".tmp-", ".trash-")) and ".old-" not in name:
        return None
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


class RunStore:
    def __init__(self, root=None):
        self.root = Path(root) if root else user_store()

    def run_dir(self, recipe: Recipe) -> Path:
        return self.root / recipe.key()[:12]

    def find(self, recipe: Recipe) -> Optional[Path]:
        """The finished run of this recipe, if any."""
        d = self.run_dir(recipe)
        return d if self.status(d).get("status") == "done" else None

    @staticmethod
    def status(run_dir: Path) -> dict:
        try:
            return json.loads((Path(run_dir) / STATUS).read_text())
        except (OSError, ValueError):
            return {}

    def runs(self):
        """Every run folder (finished, failed, or interrupted), oldest first."""
        if not self.root.is_dir():
            return []
        found = []
        for d in self.root.iterdir():
            try:  # another process may rename or delete it meanwhile
                if d.is_dir() and not d.name.startswith("_"):
                    found.append((d.stat().st_mtime, d))
            except FileNotFoundError:
                continue
        return [d for _, d in sorted(found)]

    def checkpoint_dir(self, run_id: str) -> Path:
        """Where the training stages of run ``run_id`` keep their resumable checkpoints."""
        return self.root / CHECKPOINTS / run_id

    def checkpoints(self) -> dict:
        """run id → (stage folder → step reached) of every unfinished run's checkpoints."""
        from ..compress._checkpoint import read_state

        found = {}
        root = self.root / CHECKPOINTS
        for run in sorted(root.iterdir()) if root.is_dir() else []:
            stages = {d.name: (read_state(d) or {}).get("step") for d in sorted(run.iterdir())
                      if d.is_dir() and not d.name.startswith(".")}
            if stages:
                found[run.name] = stages
        return found

    def clean(self) -> list:
        """Remove the working folders of processes that are gone (a run killed mid-way, a
        delete or a replace cut short); the names removed."""
        removed = []
        for d in self.runs():
            pid = _owner_pid(d.name)
            if pid is not None and not _pid_alive(pid):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        return removed

    def load(self, run_id: str) -> dict:
        """id, path, status, recipe (plain data), result (a :class:`RunResult`) and metrics
        (the result as plain data: as stored, migrated, with ``"schema"``; {} without any)."""
        d = self.root / run_id
        if not d.is_dir():
            raise LiteDiffError(f"no run {run_id!r} in {self.root}")
        out = {"id": run_id, "path": str(d), "status": self.status(d)}
        for key, name in (("recipe", RECIPE), ("metrics", METRICS)):
            try:
                out[key] = json.loads((d / name).read_text())
            except (OSError, ValueError):
                out[key] = {}
        try:  # the typed results (older schemas migrated); "metrics": the same as plain data
            out["result"] = RunResult.from_dict(out["metrics"])
        except LiteDiffError as e:
            raise LiteDiffError(f"run {run_id} in {self.root}: {e}") from None
        out["metrics"] = out["result"].to_dict() if out["metrics"] else {}
        return out

    def layers(self, run_id: str) -> pd.DataFrame:
        return pd.read_csv(self.root / run_id / LAYERS)

    def delete(self, run_id: str) -> None:
        d = self.root / run_id
        if not d.is_dir() or d.parent != self.root:
            raise LiteDiffError(f"no run {run_id!r} in {self.root}")
        trash = self.root / f".trash-{run_id}-{os.getpid()}"
        try:
            os.replace(d, trash)
        except FileNotFoundError:  # deleted by another process meanwhile
            raise LiteDiffError(f"no run {run_id!r} in {self.root}") from None
        shutil.rmtree(trash, ignore_errors=True)

    def stamp(self) -> tuple:
        """Changes whenever :meth:`table` would: the run folders, their recipe, status and
        metrics files, and whether a working folder's process is still alive (the dashboard
        keys its cached table by it; a few milliseconds for a hundred runs)."""
        out = []
        for d in self.runs():
            alive = None
            if d.name.startswith(".tmp-"):
                pid = _owner_pid(d.name)
                alive = pid is None or _pid_alive(pid)
            out.append((d.name, alive, *(_mtime_ns(d / f) for f in (RECIPE, STATUS, METRICS))))
        return str(self.root), tuple(out)

    def records(self) -> list:
        """``(id, run, status)`` of every run the table lists (``run`` as :meth:`load` gives
        it): finished and failed runs, and interrupted working folders (their process gone)."""
        out = []
        for d in self.runs():
            status = self.status(d)
            if d.name.startswith(".tmp-"):
                pid = _owner_pid(d.name)
                if pid is None or _pid_alive(pid) or not d.is_dir():
                    continue  # still running, or finished (renamed) since it was listed
                status = {**status, "status": "interrupted", "error": "interrupted"}
            elif d.name.startswith("."):
                continue
            try:
                run = self.load(d.name)
            except LiteDiffError:  # renamed into place or deleted meanwhile
                continue
            out.append((d.name, run, status))
        return out

    def table(self, records: Optional[list] = None) -> pd.DataFrame:
        """One row per run, for the CLI (``litediff runs``) and the dashboard; ``records``:
        :meth:`records` when the caller has them already."""
        rows = [_row(run_id, run["recipe"], status, run["result"])
                for run_id, run, status in (self.records() if records is None else records)]
        return pd.DataFrame(rows, columns=COLUMNS)


def _mtime_ns(path: Path) -> Optional[int]:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


COLUMNS = ["id", "name", "method", "status", "params", "nonzero_params", "bytes", "macs",
           "latency_ms", "speedup", "image_ms", "image_speedup", "macs_total", "fid", "fid_lo", "fid_hi", "kid", "ssim_to_base",
           "psnr_to_base", "gate", "train_steps", "wall_s", "eval", "n", "dense", "created", "error"]


def _row(run_id, recipe, status, r: RunResult) -> dict:
    size, lat, fid = r.size or Size(), r.latency or Latency(), r.fidelity or Fidelity()
    cons, gate = r.consistency or Consistency(), r.quality_gate or QualityGate()
    per = r.per_image or PerImage()   # whole images, against the dense base at DDIM 50
    ev = recipe.get("eval", {})
    return {
        "id": run_id, "name": recipe.get("name", ""), "method": r.method or "",
        "status": status.get("status", "unknown"),
        "params": size.params, "nonzero_params": size.nonzero_params,
        "bytes": size.bytes, "macs": size.macs_per_image,
        "latency_ms": lat.median_ms, "speedup": r.speedup,
        # per image, at the run's own sampling, against the dense base at DDIM 50
        "image_ms": per.seconds * 1000 if per.seconds else None,
        "image_speedup": per.speedup, "macs_total": per.macs,
        "fid": fid.fid, "fid_lo": fid.fid_lo, "fid_hi": fid.fid_hi, "kid": fid.kid_mean,
        "ssim_to_base": cons.ssim_mean, "psnr_to_base": cons.psnr_mean,
        "gate": gate.passes, "train_steps": r.train_steps, "wall_s": r.wall_s,
        "eval": f"{ev.get('n')} samples, {ev.get('sampler')} {ev.get('steps')} steps" if ev else "",
        "n": ev.get("n"),                      # the FID's sample count, to compare and sort by
        "dense": not recipe.get("stages"),     # the base itself (at any sampler)
        "created": status.get("finished"), "error": status.get("error", ""),
    }
