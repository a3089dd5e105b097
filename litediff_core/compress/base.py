"""The compression interface: a :class:`CompressState` passed through :class:`Stage` s.

Every compression method is one ``Stage`` subclass in its own file, with a ``name`` (its key in
``STAGES``), a dataclass ``Config`` of options with defaults, and ``apply``::

    state = CompressState.start(base.unet, base.scheduler, dataset="fashion-mnist", data=images)
    state = StructuredPrune(ratio=0.3, importance="l1").apply(state, progress)
    state.unet, state.notes, state.log, state.pruning_history

Stages change ``state.unet`` (possibly replacing it by a new module) and never touch
``state.teacher``. A stage's options round-trip through JSON: ``stage.to_dict()`` gives
``{"stage": name, "config": {...}}`` and ``make_stage`` (in the package) rebuilds it. Options are
declared with :func:`option`, whose ``choices`` and ``help`` the UI reads (``describe_stage``).
"""

from __future__ import annotations

import copy
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, List, Optional

import torch

from ..errors import LiteDiffError
from ..progress import Progress


@dataclass
class CompressState:
    """What flows through a compression recipe."""

    unet: Any                       # the diffusers UNet2DModel being compressed
    scheduler: Any                  # the DDPM training noise schedule (DDPMScheduler)
    teacher: Any = None             # the untouched base UNet (KD / consistency); never modified
    dataset: Optional[str] = None   # name of the dataset the model belongs to
    data: Any = None                # images for data-driven stages (ImageDataset or N×C×H×W)
    pruning_history: list = field(default_factory=list)  # torch-pruning history, JSON-able
    notes: List[str] = field(default_factory=list)       # honest remarks shown to users
    log: List[dict] = field(default_factory=list)        # one JSON-able dict per applied stage
    checkpointing: Any = None       # where the next training stage keeps resumable checkpoints

    @classmethod
    def start(cls, unet, scheduler, dataset: Optional[str] = None, data=None) -> "CompressState":
        """A state whose student is a copy of ``unet`` and whose teacher is ``unet`` itself."""
        return cls(unet=clone_model(unet), scheduler=scheduler, teacher=unet, dataset=dataset,
                   data=data)

    def note(self, text: str) -> None:
        """Add a remark for users (once)."""
        if text not in self.notes:
            self.notes.append(text)


def clone_model(module):
    """A deep copy of a model, also when it carries ``torch.nn.utils.prune`` masks (whose
    computed ``weight`` tensors plain ``deepcopy`` refuses; the copy recomputes them)."""
    memo = {id(m.weight): m.weight.detach().clone() for m in module.modules()
            if hasattr(m, "weight_mask") and isinstance(getattr(m, "weight", None), torch.Tensor)}
    return copy.deepcopy(module, memo)


def option(default, help: str = "", choices=None, late: bool = False):
    """A ``Config`` field with a default, a one-line help and (for str / tuple options) the
    allowed values; tuple options are multi-choice (a subset of ``choices``). ``late`` options
    are listed after the others (forms show them last)."""
    meta = {"help": help, "late": late}
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


class Stage:
    """One compression step. Subclasses set ``name``, define a dataclass ``Config`` and
    implement ``apply``."""

    name: ClassVar[str] = ""
    # traits the runner and the pages read (a method's facts live in its class only)
    trains: ClassVar[bool] = False         # runs a training loop (its ``steps`` count as training)
    previewable: ClassVar[bool] = False    # its size can be predicted without data or training
    must_be_last: ClassVar[bool] = False   # a sampling-time wrapper that nothing may follow
    # options added after runs were stored, with their defaults: a recipe's key leaves them
    # out while they keep the default, so stored runs (cached_results/) are still found
    added_options: ClassVar[dict] = {}

    @dataclass
    class Config:
        pass

    def __init__(self, config=None, **options):
        if config is not None and options:
            raise LiteDiffError(f"{self.name}: give either a config or options, not both")
        if config is not None and not isinstance(config, self.Config):
            options, config = dict(config), None  # a dict, e.g. read back from JSON
        self.config = config if config is not None else self._make_config(options)
        self._check(self.config)
        self.check()

    def check(self) -> None:
        """Range checks of ``self.config`` (raise :class:`LiteDiffError`); types and choices are
        already checked."""

    def check_sampling(self, steps: int) -> None:
        """Refuse (LiteDiffError) sampling settings this stage cannot honour (e.g. a cache
        interval not below the number of sampling steps); called when a recipe is built."""

    def apply(self, state: CompressState, progress: Optional[Progress] = None) -> CompressState:
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"stage": self.name, "config": asdict(self.config)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    # ------------------------------------------------------------------ options

    def _make_config(self, options: dict):
        names = [f.name for f in fields(self.Config)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise LiteDiffError(f"{self.name} does not take {', '.join(unknown)}; "
                                f"it takes {', '.join(names)}")
        return self.Config(**options)

    def _check(self, config) -> None:
        """Coerce JSON values (lists -> tuples, ints -> floats) and check choices."""
        hints = typing.get_type_hints(type(config))
        for f in fields(config):
            value, kind = getattr(config, f.name), type_name(hints[f.name])
            choices = f.metadata.get("choices")
            if kind == "list[str]":
                value = (value,) if isinstance(value, str) else tuple(value or ())
                bad = [v for v in value if choices is not None and v not in choices]
                if bad:
                    raise LiteDiffError(f"{self.name}: {f.name} cannot include {', '.join(bad)}; "
                                        f"choose from {', '.join(choices)}")
            elif kind == "bool":
                if not isinstance(value, bool):
                    raise LiteDiffError(f"{self.name}: {f.name} must be true or false, "
                                        f"not {value!r}")
            elif kind in ("int", "float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                        kind == "int" and value != int(value)):
                    raise LiteDiffError(f"{self.name}: {f.name} must be a number ({kind}), "
                                        f"not {value!r}")
                value = int(value) if kind == "int" else float(value)
            elif choices is not None and value not in choices:
                raise LiteDiffError(f"{self.name}: unknown {f.name} {value!r}; "
                                    f"choose one of {', '.join(choices)}")
            setattr(config, f.name, value)


def type_name(hint) -> str:
    """'bool' | 'int' | 'float' | 'str' | 'list[str]' for a Config annotation."""
    if typing.get_origin(hint) in (tuple, list):
        return "list[str]"
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return getattr(hint, "__name__", str(hint))


def describe_config(config_cls) -> List[dict]:
    """The options of a ``Config`` class: name, type, default, choices (or None) and help."""
    hints = typing.get_type_hints(config_cls)
    out = []  # in declaration order, ``late`` options last
    for f in sorted(fields(config_cls), key=lambda f: f.metadata.get("late", False)):
        default = f.default if f.default is not MISSING else f.default_factory()
        out.append({"name": f.name, "type": type_name(hints[f.name]),
                    "default": list(default) if isinstance(default, tuple) else default,
                    "choices": list(f.metadata["choices"]) if "choices" in f.metadata else None,
                    "help": f.metadata.get("help", "")})
    return out
