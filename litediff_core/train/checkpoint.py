"""Resumable training checkpoints without pickle: tensors in safetensors, the rest in JSON.

A checkpoint folder holds ``model.safetensors``, ``ema.safetensors`` (optional),
``optimizer.safetensors`` + the optimizer's param groups and ``state.json``; it is written to a
temporary folder and renamed, so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from ..fileio import atomic_dir


def _optimizer_tensors(opt: torch.optim.Optimizer) -> Tuple[Dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{idx}.{key}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def _load_optimizer(opt: torch.optim.Optimizer, tensors: Dict[str, torch.Tensor],
                    groups: list) -> None:
    state: Dict[int, Dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict, ema_params: Optional[list] = None) -> None:
    with atomic_dir(folder) as tmp:
        _write(tmp, model, optimizer, state, ema_params)


def _write(tmp: Path, model, optimizer, state: dict, ema_params) -> None:
    names = [n for n, _ in model.named_parameters()]
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp / "model.safetensors"))
    if ema_params is not None:
        save_file({n: p.detach().cpu().contiguous() for n, p in zip(names, ema_params)},
                  str(tmp / "ema.safetensors"))
    tensors, groups = _optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "optimizer_param_groups": groups},
                                               indent=2))


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema_params: Optional[list] = None) -> dict:
    """Restore model, optimizer and EMA in place; returns the saved ``state`` dict."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    _load_optimizer(optimizer, load_file(str(folder / "optimizer.safetensors")),
                    state.pop("optimizer_param_groups"))
    if ema_params is not None:
        ema = load_file(str(folder / "ema.safetensors"))
        for (name, _), p in zip(model.named_parameters(), ema_params):
            p.data.copy_(ema[name])
    return state
