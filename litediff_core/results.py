"""The typed schema of a run's results: ``<store>/<id>/metrics.json`` as :class:`RunResult`.

Every part is a small dataclass whose fields are None where a run (or the version of LiteDiff
that made it) did not measure them; keys this version does not know are kept in the part's
``extra`` and written back by ``to_dict()``, so reading and writing a file loses nothing.
A field that is None is left out when written (None means "not measured").

Schema versions: 1 (no ``"schema"`` key: every run made before this module) and 2 (this one:
the same data, with ``"schema": 2``). :meth:`RunResult.from_dict` migrates version 1 and
refuses a newer schema than it knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import PurePath
from typing import ClassVar, List, Optional

from .errors import LiteDiffError

SCHEMA_VERSION = 2
SCHEMA = "schema"       # the key of the schema version in metrics.json
RUN_MODEL = "model"     # the model folder inside a run folder (``runs.MODEL``)


@dataclass(kw_only=True)
class _Part:
    """Typed fields plus ``extra``: the keys read that this version does not know."""

    extra: dict = field(default_factory=dict)
    _nested: ClassVar[dict] = {}   # field name → part class (of the value or of a list's items)

    @classmethod
    def from_dict(cls, data: Optional[dict]):
        if data is None:
            return None
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        for name, part in cls._nested.items():
            value = values.get(name)
            if isinstance(value, list):
                values[name] = [part.from_dict(x) if isinstance(x, dict) else x for x in value]
            elif isinstance(value, dict):
                values[name] = part.from_dict(value)
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict:
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self)
               if f.name != "extra" and getattr(self, f.name) is not None}
        return {**out, **self.extra}


def _plain(value):
    if isinstance(value, _Part):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(x) for x in value]
    return value


@dataclass(kw_only=True)
class Size(_Part):
    """Of one UNet call (``metrics.size_report``); DeepCache adds its cached steps' MACs."""
    params: Optional[int] = None
    nonzero_params: Optional[int] = None
    bytes: Optional[int] = None
    macs_per_image: Optional[int] = None   # per image and denoising step
    cached_step_macs: Optional[int] = None


@dataclass(kw_only=True)
class Latency(_Part):
    """One denoising step of a batch (``metrics.step_latency``)."""
    median_s: Optional[float] = None
    p10_s: Optional[float] = None
    p90_s: Optional[float] = None
    images_per_s: Optional[float] = None
    batch_size: Optional[int] = None
    repeats: Optional[int] = None
    warmup: Optional[int] = None
    device: Optional[str] = None
    threads: Optional[int] = None
    dtype: Optional[str] = None
    torch_version: Optional[str] = None
    cpu: Optional[str] = None
    gpu: Optional[str] = None

    @property
    def median_ms(self) -> Optional[float]:
        return self.median_s * 1000 if self.median_s else None


@dataclass(kw_only=True)
class Fidelity(_Part):
    """FID / KID / precision-recall of the run's samples (``FidelityResult`` + its label)."""
    fid: Optional[float] = None
    fid_ci95: Optional[list] = None        # [low, high], 95 % bootstrap interval
    kid_mean: Optional[float] = None
    kid_std: Optional[float] = None
    precision: Optional[float] = None
    recall: Optional[float] = None
    f_score: Optional[float] = None
    n_generated: Optional[int] = None
    n_reference: Optional[int] = None
    extractor: Optional[str] = None
    reference_name: Optional[str] = None
    kid_subset_size: Optional[int] = None
    bootstrap: Optional[int] = None
    seed: Optional[int] = None
    fid_bootstrap_bias: Optional[float] = None
    reference_from_cache: Optional[bool] = None
    setup: Optional[dict] = None            # sampler, steps, seed, η, caching
    label: Optional[str] = None

    @property
    def fid_lo(self) -> Optional[float]:
        return (self.fid_ci95 or [None, None])[0]

    @property
    def fid_hi(self) -> Optional[float]:
        return (self.fid_ci95 or [None, None])[1]


@dataclass(kw_only=True)
class PerImage(_Part):
    """One whole image at the run's own sampling against the dense base at DDIM 50."""
    seconds: Optional[float] = None
    base_seconds: Optional[float] = None
    speedup: Optional[float] = None
    speedup_rounds: Optional[list] = None
    macs: Optional[int] = None
    base_macs: Optional[int] = None
    unet_calls: Optional[dict] = None       # {"full": n, "cached": n}
    setup: Optional[dict] = None
    base_setup: Optional[dict] = None
    batch_size: Optional[int] = None
    device: Optional[str] = None
    threads: Optional[int] = None
    load_average: Optional[float] = None    # 1-minute load while timed

    @property
    def busy(self) -> bool:
        """Timed while other work ran: a 1-minute load above the timing's own threads + 1
        (PyTorch's thread pool slows several-fold then, so the ratio is not to be trusted)."""
        return (self.load_average is not None and self.threads is not None
                and self.load_average > self.threads + 1.0)


@dataclass(kw_only=True)
class QualityGate(_Part):
    """The embedded Fashion-MNIST model's gate (``evaluate.quality_gate``)."""
    mean_max_probability: Optional[float] = None
    class_fractions: Optional[dict] = None
    passes: Optional[bool] = None
    rule: Optional[str] = None
    n: Optional[int] = None


@dataclass(kw_only=True)
class Consistency(_Part):
    """SSIM / PSNR of the run's samples to the dense base's from the same noise."""
    ssim_mean: Optional[float] = None
    psnr_mean: Optional[float] = None
    n: Optional[int] = None
    setup: Optional[str] = None


@dataclass(kw_only=True)
class Environment(_Part):
    litediff: Optional[str] = None
    torch: Optional[str] = None
    machine: Optional[str] = None
    threads: Optional[int] = None
    cpu: Optional[str] = None
    vnni: Optional[bool] = None
    gpu: Optional[str] = None               # the GPU's name, where the run was evaluated on one


@dataclass(kw_only=True)
class StageTime(_Part):
    stage: Optional[str] = None
    seconds: Optional[float] = None


@dataclass(kw_only=True)
class RecoveryCurve(_Part):
    """One training stage's recovery curve (``compress/_curve.py``); points stay plain dicts
    (step, train_s, fid, fid_lo, fid_hi, eps_mse, eps_mse_teacher), as checkpoints hold them."""
    stage_index: Optional[int] = None
    stage: Optional[str] = None
    label: Optional[str] = None
    points: Optional[list] = None
    reference: Optional[dict] = None        # the dense teacher's point at the same setup
    resumed_from: Optional[int] = None


@dataclass(kw_only=True)
class RunResult(_Part):
    """A run's results, in the order they are written."""
    model: Optional[str] = None             # the model folder, relative to the run folder
    dataset: Optional[str] = None
    setup: Optional[dict] = None            # the evaluation setup (``EvalConfig`` as data)
    size: Optional[Size] = None
    latency: Optional[Latency] = None
    fidelity: Optional[Fidelity] = None
    environment: Optional[Environment] = None
    quality_gate: Optional[QualityGate] = None
    base_latency: Optional[Latency] = None
    speedup: Optional[float] = None         # per step: base latency / this one, same run
    speedup_rounds: Optional[list] = None
    per_image: Optional[PerImage] = None
    consistency: Optional[Consistency] = None
    recovery: Optional[List[RecoveryCurve]] = None
    method: Optional[str] = None
    stages: Optional[List[StageTime]] = None
    notes: Optional[list] = None
    train_steps: Optional[int] = None
    wall_s: Optional[float] = None
    latency_history: Optional[list] = None  # earlier timings (plain data), oldest first
    latency_remeasured: Optional[str] = None

    _nested: ClassVar[dict] = {
        "size": Size, "latency": Latency, "base_latency": Latency, "fidelity": Fidelity,
        "environment": Environment, "quality_gate": QualityGate, "per_image": PerImage,
        "consistency": Consistency, "recovery": RecoveryCurve, "stages": StageTime}

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "RunResult":
        """Read stored results of any known schema (``{}`` or None: nothing measured)."""
        data = dict(data or {})
        version = data.pop(SCHEMA, 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise LiteDiffError(f"results of an unknown schema {version!r}")
        if version > SCHEMA_VERSION:
            raise LiteDiffError(f"results of schema {version}, newer than this LiteDiff reads "
                                f"(up to {SCHEMA_VERSION}): upgrade LiteDiff to read them")
        if version == 1:
            data = _from_v1(data)
        return super().from_dict(data)

    def to_dict(self) -> dict:
        return {SCHEMA: SCHEMA_VERSION, **super().to_dict()}


def _from_v1(data: dict) -> dict:
    """Version 1 → 2: runs made before the runner stored relative paths hold the absolute path
    of the model in their build folder (``…/.tmp-<id>-<pid>/model``)."""
    model = data.get("model")
    if isinstance(model, str) and model != RUN_MODEL:
        path = PurePath(model)
        if path.name == RUN_MODEL and path.parent.name.startswith(".tmp-"):
            data["model"] = RUN_MODEL
    return data
