"""Heavy libraries imported on first use.

The stage registry (``litediff_core.compress.STAGES``: every method's options and facts) and
recipes are read by forms, the CLI's validation and the Explore page, which need no tensor;
importing torch, diffusers and torch-pruning costs seconds on a small CPU (the dashboard's
first page switch waited for it). Stage modules therefore name these libraries through
:class:`LazyModule`, which imports on the first attribute access, and their ``nn.Module``
classes live in private modules imported where they are used::

    from .._lazy import F, nn, torch    # nothing imported yet
    torch.zeros(3)                      # torch is imported here

``tests/test_stage_contract.py`` checks that the registry and recipes load without torch.
"""

from __future__ import annotations

import functools
import importlib


class LazyModule:
    """A module by name, imported on first attribute access (then an ordinary attribute
    lookup: ``importlib.import_module`` returns the cached module)."""

    __slots__ = ("_name",)

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazily imported module {self._name!r}>"


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
F = LazyModule("torch.nn.functional")
torch_prune = LazyModule("torch.nn.utils.prune")
tp = LazyModule("torch_pruning")
size = LazyModule("litediff_core.metrics.size")   # params / MACs counting (torch, fvcore)


def exported_from(module: str, package: str, names: dict):
    """A module ``__getattr__`` (PEP 562) that gives each of ``names`` (name → the private
    module defining it, relative to ``package``) from that module, imported on first access:
    ``from .lowrank import LowRankConv2d`` keeps working while ``lowrank`` needs no torch."""
    def __getattr__(name):
        if name in names:
            return getattr(importlib.import_module(names[name], package), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return __getattr__


def no_grad(fn):
    """``@torch.no_grad()`` that imports torch when ``fn`` is first called, not when it is
    defined."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)
    return wrapper
