"""Recipes: a base model, a dataset, a seed, ordered compression stages and the evaluation setup,
as plain data (YAML or JSON) that round-trips.

The recipe's ``key`` hashes everything that changes the result (stage options with their
defaults filled in, base, dataset, seed, evaluation setup) but not its display ``name``, so a
recipe already run is found again in the run store instead of being recomputed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

from .errors import LiteDiffError

EVAL_DEFAULTS = {"n": 1000, "sampler": "ddim", "steps": 50, "latency_batch": 16, "eta": 0.0}
# keys added after runs were stored: hashed only when set to another value, so the keys of
# stored runs (cached_results/) stay valid
EVAL_ADDED = {"eta": 0.0}
EVAL_COUNTS = ("n", "steps", "latency_batch")   # whole numbers ≥ 1
# the names of litediff_core.samplers.SAMPLERS, without importing torch (a test keeps them equal)
SAMPLER_NAMES = ("ddpm", "ddim", "dpm-solver++", "ams")
DENSE_METHOD = "base (dense)"  # the method of a recipe without stages (tables mark it `dense`)
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a name"}


def check_eval(ev) -> dict:
    """``ev`` (overrides of EVAL_DEFAULTS) with the defaults filled in, or a LiteDiffError if it
    cannot run: an unknown key, a count below 1, a value of another type than its default, an
    unknown sampler."""
    if not isinstance(ev, dict):
        raise LiteDiffError(f"recipe eval is a mapping such as {{n: 1000, steps: 50}}, not {ev!r}")
    unknown = sorted(set(ev) - set(EVAL_DEFAULTS))
    if unknown:
        raise LiteDiffError(f"recipe eval does not take {', '.join(unknown)}; "
                            f"it takes {', '.join(EVAL_DEFAULTS)}")
    ev = {**EVAL_DEFAULTS, **ev}
    for key, default in EVAL_DEFAULTS.items():
        value = ev[key]
        kind = (int, float) if type(default) is float else type(default)
        if default is not None and (not isinstance(value, kind)
                                    or isinstance(value, bool) != isinstance(default, bool)):
            raise LiteDiffError(f"recipe eval {key} must be "
                                f"{_KINDS.get(type(default), type(default).__name__)}, "
                                f"not {value!r}")
        if key in EVAL_COUNTS and value < 1:
            raise LiteDiffError(f"recipe eval {key} must be at least 1, not {value!r}")
    if not 0.0 <= ev["eta"] <= 1.0 or (ev["eta"] and ev["sampler"] not in ("ddim", "ams")):
        raise LiteDiffError(f"recipe eval eta (DDIM's η, 0 = deterministic … 1 = DDPM-like) "
                            f"must be within 0–1 and applies to ddim and ams only, not "
                            f"{ev['eta']!r} with {ev['sampler']}")
    if ev["sampler"] not in SAMPLER_NAMES:
        raise LiteDiffError(f"unknown sampler {ev['sampler']!r} in recipe eval; choose one of "
                            f"{', '.join(SAMPLER_NAMES)}")
    return ev


@dataclass
class Recipe:
    base: str = "embedded"
    dataset: Optional[str] = None          # None: the dataset the base model belongs to
    seed: int = 0
    stages: List[dict] = field(default_factory=list)   # [{"stage": name, "config": {...}}]
    eval: dict = field(default_factory=dict)            # overrides of EVAL_DEFAULTS
    name: str = ""                                       # display name (not hashed)

    def __post_init__(self):
        from .compress import make_stage

        # refuse what cannot run now, before anything is computed or stored
        if not isinstance(self.base, str) or not self.base.strip():
            raise LiteDiffError(f"recipe base must be a model (embedded, a folder or a hub id), "
                                f"not {self.base!r}")
        if self.dataset is not None and not isinstance(self.dataset, str):
            raise LiteDiffError(f"recipe dataset must be a name, not {self.dataset!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise LiteDiffError(f"recipe seed must be a whole number, not {self.seed!r}")
        if not isinstance(self.stages, list):
            raise LiteDiffError("recipe stages is a list of {stage: name, config: {...}}")
        self.eval = check_eval(self.eval)
        # normalise: every stage rebuilt through its Config, so defaults are explicit
        stages = [make_stage(s) for s in self.stages]
        for i, stage in enumerate(stages):
            if stage.must_be_last and i != len(stages) - 1:
                raise LiteDiffError(f"{stage.name} {stage.last_because}: put it last in the "
                                    f"recipe (after {stages[-1].name})")
            stage.check_sampling(self.eval["steps"])
        self.stages = [stage.to_dict() for stage in stages]
        if not self.name:
            self.name = self.method()

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        if not isinstance(data, dict):
            raise LiteDiffError("a recipe is a mapping with keys base, dataset, seed, stages, eval")
        unknown = sorted(set(data) - {"base", "dataset", "seed", "stages", "eval", "name"})
        if unknown:
            raise LiteDiffError(f"unknown recipe keys: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path) -> "Recipe":
        import yaml

        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise LiteDiffError(f"cannot read recipe {path}: {e.strerror or e}") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            raise LiteDiffError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}"
                                f": {str(e).splitlines()[0]}") from None
        return cls.from_dict(data)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ------------------------------------------------------------------ identity

    def key(self) -> str:
        hashed = {k: v for k, v in self.to_dict().items() if k != "name"}
        hashed["eval"] = {k: v for k, v in self.eval.items()
                          if not (k in EVAL_ADDED and v == EVAL_ADDED[k])}
        from .compress import STAGES

        hashed["stages"] = [{**s, "config": {
            k: v for k, v in s["config"].items()
            if not (k in STAGES[s["stage"]].added_options
                    and v == STAGES[s["stage"]].added_options[k])}} for s in self.stages]
        return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()

    def method(self) -> str:
        """A short human description, e.g. ``structured-prune(l1, 0.3) → finetune(500)``."""
        from .compress import STAGES

        parts = []
        for s in self.stages:
            c = s["config"]
            detail = [str(c[k]) for k in STAGES[s["stage"]].headline]
            parts.append(f"{s['stage']}({', '.join(detail)})" if detail else s["stage"])
        text = " → ".join(parts) or DENSE_METHOD
        ev = self.eval
        if (ev["sampler"], ev["steps"], ev["eta"]) != ("ddim", 50, 0.0):
            text += f" · {ev['sampler']} {ev['steps']}" + (f" η={ev['eta']:g}" if ev["eta"] else "")
        return text


def sweep_recipes(path_or_dict) -> List[Recipe]:
    """A sweep: ``{"recipe": {...}, "grid": {"<stage index>.<option>": [values, ...]}}`` gives
    one recipe per point of the grid (the product of the value lists); ``"recipes": [...]``
    lists recipes one by one; both may be given."""
    import itertools

    import yaml

    if isinstance(path_or_dict, dict):
        spec = path_or_dict
    else:
        path = Path(path_or_dict)
        try:
            spec = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise LiteDiffError(f"cannot read sweep {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(spec, dict) or not ({"recipe", "recipes"} & set(spec)):
        raise LiteDiffError("a sweep has `recipe` (+ `grid`) and/or `recipes`")
    out = [Recipe.from_dict(r) for r in spec.get("recipes", [])]
    if "recipe" in spec:
        grid = spec.get("grid") or {}
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            data = json.loads(json.dumps(spec["recipe"]))
            for key, value in zip(keys, values):
                index, _, option = key.partition(".")
                try:
                    data["stages"][int(index)].setdefault("config", {})[option] = value
                except (ValueError, IndexError, KeyError):
                    raise LiteDiffError(f"grid key {key!r} must be <stage index>.<option> of "
                                        f"an existing stage") from None
            data.pop("name", None)
            out.append(Recipe.from_dict(data))
    return out
