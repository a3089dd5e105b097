"""Device choice shared by the CLI and the app: ``auto`` picks CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch

from .errors import LiteDiffError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> str:
    name = (name or "auto").lower()
    if name not in DEVICES:
        raise LiteDiffError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise LiteDiffError("CUDA was asked for but no CUDA GPU is visible to torch")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise LiteDiffError("MPS was asked for but is not available on this machine")
    return name
