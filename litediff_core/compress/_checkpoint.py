"""Resumable training: the whole state of the shared training loop in one folder, no pickle.

A checkpoint folder holds::

    model.safetensors      the model's state_dict (pruning masks included)
    optimizer.safetensors  Adam's per-parameter tensors (exp_avg, exp_avg_sq, step)
    ema.safetensors        the EMA's shadow weights (when the loop keeps an EMA)
    state.json             step, losses, recovery curve, elapsed seconds, the stage's own
                           counters, the optimizer's and scheduler's plain settings and the
                           fingerprint of what was being trained

Every training step draws its images, timesteps and noise from a generator seeded by
(seed, step), so the loop resumed at step k takes exactly the steps an uninterrupted run takes
from k on: the result is the same model (tested bit for bit on CPU).

The fingerprint is the stage's options and a hash of the model the stage started from; a
checkpoint whose fingerprint differs (another recipe, or earlier stages that now produce a
different model) is refused with a message rather than silently continued. A folder is written
next to the old one and renamed over it (``replace_dir``), so a kill leaves either the previous
checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .._lazy import torch
from ..errors import LiteDiffError
from ..fileio import atomic_dir

STATE, MODEL, OPTIMIZER, EMA = "state.json", "model.safetensors", "optimizer.safetensors", \
    "ema.safetensors"
FORMAT = 1


@dataclass
class Checkpointing:
    """Where and how often a training stage keeps a resumable checkpoint."""

    folder: Path
    every_s: float = 60.0             # at most this long between checkpoints (wall time)
    every_steps: Optional[int] = None  # or exactly every this many steps (tests)

    def due(self, step: int, steps: int, last_saved: float) -> bool:
        if step >= steps:
            return True
        if self.every_steps:
            return step % self.every_steps == 0
        return time.monotonic() - last_saved >= self.every_s


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over the model's state_dict (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _save_tensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def save(folder: Path, *, fingerprint: dict, step: int, model, optimizer, scheduler,
         ema=None, info: dict) -> None:
    """Write the loop's state after ``step`` optimizer steps into ``folder`` atomically."""
    with atomic_dir(folder) as tmp:
        _write(tmp, fingerprint, step, model, optimizer, scheduler, ema, info)


def _write(tmp: Path, fingerprint, step, model, optimizer, scheduler, ema, info) -> None:
    _save_tensors(model.state_dict(), tmp / MODEL)
    opt = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, values in opt["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                plain[f"{index}.{key}"] = value
    _save_tensors(tensors, tmp / OPTIMIZER)
    state = {"format": FORMAT, "fingerprint": fingerprint, "step": step,
             "optimizer": {"param_groups": opt["param_groups"], "plain": plain},
             "scheduler": scheduler.state_dict(), **info}
    if ema is not None:
        ema_state = ema.state_dict()
        shadow = ema_state.pop("shadow_params")
        _save_tensors({str(i): t for i, t in enumerate(shadow)}, tmp / EMA)
        state["ema"] = ema_state
    (tmp / STATE).write_text(json.dumps(state, default=float))


def read_state(folder: Path) -> Optional[dict]:
    """The checkpoint's state.json, or None when there is no readable checkpoint."""
    try:
        state = json.loads((Path(folder) / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("format") == FORMAT else None


def comparable(fingerprint: dict) -> dict:
    """A fingerprint without the stage's options that were added after it may have been
    written, where they keep their defaults (a checkpoint from before an option existed still
    resumes, as a stored recipe keeps its key)."""
    from . import STAGES

    stage = STAGES.get(fingerprint.get("stage"))
    if stage is None or not isinstance(fingerprint.get("config"), dict):
        return fingerprint
    added = stage.added_options
    return {**fingerprint, "config": {k: v for k, v in fingerprint["config"].items()
                                      if not (k in added and v == added[k])}}


def load(folder: Path, state: dict, *, fingerprint: dict, model, optimizer, scheduler,
         ema=None, who: str = "train") -> None:
    """Put a checkpoint's tensors back into the loop's objects (``state`` from read_state)."""
    saved, wanted = comparable(state["fingerprint"]), comparable(fingerprint)
    if saved != wanted:
        differ = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise LiteDiffError(
            f"{who}: the checkpoint in {folder} belongs to another run (its "
            f"{', '.join(differ)} differ{'s' if len(differ) == 1 else ''}): resume it with the "
            f"recipe that wrote it, or start again with --restart")
    folder = Path(folder)
    try:
        model.load_state_dict(_load_tensors(folder / MODEL))
        tensors = _load_tensors(folder / OPTIMIZER)
        shadow = _load_tensors(folder / EMA) if ema is not None else None
    except Exception as e:  # noqa: BLE001 — a damaged file: say which, suggest the way out
        raise LiteDiffError(f"{who}: the checkpoint in {folder} cannot be read ({e}); start "
                            f"again with --restart") from None
    opt_state: dict = {}
    for key, value in list(tensors.items()) + list(state["optimizer"]["plain"].items()):
        index, _, name = key.partition(".")
        opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state,
                               "param_groups": state["optimizer"]["param_groups"]})
    scheduler.load_state_dict(state["scheduler"])
    if ema is not None:
        ema.load_state_dict({**state["ema"],
                             "shadow_params": [shadow[str(i)] for i in range(len(shadow))]})
