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
import time
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar, List, Optional

from .._lazy import torch
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


def option(default, help: str = "", choices=None, *, low=None, high=None,
           open_low: bool = False, open_high: bool = False, widget: Optional[str] = None,
           late: bool = False):
    """A ``Config`` field with a default, a one-line help and (for str / tuple options) the
    allowed values; tuple options are multi-choice (a subset of ``choices``).

    Numbers may declare their range: ``low`` / ``high`` (``open_low`` / ``open_high`` exclude the
    bound), checked for every stage before it is built and read by the forms. ``widget`` is a
    hint for forms (``"slider"`` for a bounded number better set by eye). ``late`` options are
    listed after the others (forms show them last)."""
    if widget not in (None, "slider"):
        raise ValueError(f"unknown widget hint {widget!r}")
    if widget == "slider" and (low is None or high is None):
        raise ValueError("a slider needs both bounds")
    meta = {"help": help, "late": late, "low": low, "high": high, "open_low": open_low,
            "open_high": open_high, "widget": widget}
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


def range_error(name: str, value, meta) -> Optional[str]:
    """Why ``value`` lies outside an option's declared range (None when inside)."""
    low, high = meta.get("low"), meta.get("high")
    below = low is not None and (value < low or (meta.get("open_low") and value == low))
    above = high is not None and (value > high or (meta.get("open_high") and value == high))
    if not (below or above):
        return None
    if low is not None and high is not None:
        return (f"{name} must be in {'(' if meta.get('open_low') else '['}{low:g}, {high:g}"
                f"{')' if meta.get('open_high') else ']'}, not {value:g}")
    if low is not None:
        bound = (f"> {low:g}" if meta.get("open_low") else
                 "≥ 0" if low == 0 else f"at least {low:g}")
        return f"{name} must be {bound}, not {value:g}"
    return f"{name} must be {'<' if meta.get('open_high') else '≤'} {high:g}, not {value:g}"


# Families in the order forms list them; a stage's ``family`` is one of these.
FAMILIES = ("structured", "unstructured", "low-rank", "quant", "finetune", "kd", "lora",
            "runtime", "sampling")
REGISTRY: dict = {}   # stage name → class, filled as stage modules are imported


class Stage:
    """One compression step. Subclasses set ``name`` and ``family``, define a dataclass
    ``Config`` and implement ``apply``; defining the class registers it (``STAGES``), so a new
    method is one new file in this package."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""             # one of FAMILIES: forms' order, plots' colour
    # the options a run's one-line method string shows, e.g. structured-prune(l1, 0.3)
    headline: ClassVar[tuple] = ()
    # traits the runner and the pages read (a method's facts live in its class only)
    trains: ClassVar[bool] = False         # runs a training loop (its ``steps`` count as training)
    previewable: ClassVar[bool] = False    # its size can be predicted without data or training
    must_be_last: ClassVar[bool] = False   # a sampling-time wrapper that nothing may follow
    last_because: ClassVar[str] = "acts at sampling time"   # why (the recipe's message)
    # options added after runs were stored, with their defaults: a recipe's key leaves them
    # out while they keep the default, so stored runs (cached_results/) are still found
    added_options: ClassVar[dict] = {}

    @dataclass
    class Config:
        pass

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.family not in FAMILIES:
                raise TypeError(f"stage {cls.name}: family must be one of {FAMILIES}")
            known = {f.name for f in fields(cls.Config)}
            if not set(cls.headline) <= known:
                raise TypeError(f"stage {cls.name}: headline names unknown options")
            REGISTRY[cls.name] = cls

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

    def apply(self, state: CompressState, progress: Optional[Progress] = None,
              *args, **inputs) -> CompressState:
        """Run the stage on ``state``: :meth:`transform` makes the new model (from a copy: the
        state is left intact if it fails), which replaces ``state.unet``, and the stage's log
        entry (its options, what it reports, its seconds) is appended to ``state.log``. Extra
        arguments (e.g. ``data=``, ``calibration=``) go to ``transform``."""
        start = time.perf_counter()
        model, entry = self.transform(state, progress, *args, **inputs)
        state.unet = model
        state.log.append({"stage": self.name, "config": asdict(self.config), **entry,
                          "seconds": round(time.perf_counter() - start, 3)})
        return state

    def transform(self, state: CompressState, progress: Optional[Progress] = None) -> tuple:
        """``(new model, log facts)``: the stage's work on a copy of ``state.unet`` (never on
        ``state.teacher``); it may add notes and pruning history to ``state``."""
        raise NotImplementedError

    def can_preview(self) -> bool:
        """Whether the model's size after this stage is known before it runs (forms offer a
        prediction when it is); :meth:`preview` is called only then."""
        return self.previewable

    def preview(self, state: CompressState, notes: List[str]) -> CompressState:
        """The state after this stage as far as the model's *size* goes, made without data or
        training (what forms show before a run; see :func:`~.preview.preview_size`). A stage
        that previews with a stand-in (e.g. L1 ranking for a gradient ranking) says so in
        ``notes``."""
        return self.apply(state)

    @classmethod
    def summary(cls) -> str:
        """One line for forms: the first line of the class docstring, up to "; see"."""
        first = (cls.__doc__ or "").strip().split("\n")[0]
        return first.split("; see")[0].replace("``", "`").strip()

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
                why = range_error(f.name, value, f.metadata)
                if why:
                    raise LiteDiffError(f"{self.name}: {why}")
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
    """The options of a ``Config`` class, for forms: name, type, default, choices (or None),
    help, and for numbers their range (low, high, open_low, open_high; None where unbounded)
    and widget hint."""
    hints = typing.get_type_hints(config_cls)
    out = []  # in declaration order, ``late`` options last
    for f in sorted(fields(config_cls), key=lambda f: f.metadata.get("late", False)):
        default = f.default if f.default is not MISSING else f.default_factory()
        out.append({"name": f.name, "type": type_name(hints[f.name]),
                    "default": list(default) if isinstance(default, tuple) else default,
                    "choices": list(f.metadata["choices"]) if "choices" in f.metadata else None,
                    "help": f.metadata.get("help", ""),
                    **{k: f.metadata.get(k) for k in ("low", "high", "widget")},
                    "open_low": bool(f.metadata.get("open_low")),
                    "open_high": bool(f.metadata.get("open_high"))})
    return out
