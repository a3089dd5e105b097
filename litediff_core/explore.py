"""Explore: a handful of controls that define ONE compression recipe (the dashboard's Explore
page), plus what the page shows around it — the link text of the controls, the nearest stored
recipes, a training-budget warning read from the stored runs, and a time estimate from measured
throughput. Streamlit-free and pure (except :func:`measure_rates`, which times the model).

    c = Controls(ratio=0.3, method="l1", train_steps=400)
    recipe = recipe_of(c)            # structured-prune(l1, 0.3) → finetune(400), eval n=200
    controls_of(recipe.to_dict())    # == c: stored runs map back onto the controls
    to_query(c), from_query({...})   # the URL's query parameters and their parse (+ warnings)

The mapping (``recipe_of``): a prune ratio > 0 adds ``structured-prune`` (``method`` is one of its
importances) or ``unstructured-prune`` (``method`` = :data:`UNSTRUCTURED`, L1); recovery training
follows it — ``lora`` when a LoRA rank is set (with ``kd_frac`` when KD s=1 is on), else
``distill`` when KD s=1 is on, else ``finetune`` after pruning. KD s=2 / s=4 is a fresh student
(``distill`` with ``fresh`` and ``scale``), which takes no pruning and no LoRA. Then the
quantization stage, then ``deepcache`` (feature caching) last. The evaluation is the grid's —
the sample count and latency batch most stored runs of the base share (:func:`grid_eval`; the
shipped sweep's 200 samples) — at the chosen sampler and steps, so settings on the grid find
the precomputed runs of ``cached_results/``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field, fields, replace
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from .errors import LiteDiffError
from .recipes import SAMPLER_NAMES, Recipe

# ----------------------------------------------------------------------------- the controls

RATIOS = tuple(round(0.1 * i, 1) for i in range(8))        # 0 (off) … 0.7, step 0.1
UNSTRUCTURED = "unstructured-l1"                           # method → unstructured-prune (L1)
KD_SCALES = (1, 2, 4)                                      # distill: s=1 current model, 2/4 fresh
LORA_RANKS = (2, 4, 8)
QUANT = ("none", "int8", "w8a8", "w4a8")
QUANT_LABELS = {"none": "none (fp32)", "int8": "int8 (real, ONNX Runtime)",
                "w8a8": "W8A8 (simulated)", "w4a8": "W4A8 (simulated)"}
STEPS = (5, 10, 20, 50)
CACHE_INTERVALS = (2, 3, 5)                                # deepcache interval; 0 = off
# the evaluation of the shipped sweep (benchmarks/sweep.py --n 200): samples, latency batch
GRID_EVAL = {"n": 200, "latency_batch": 16}
TRAIN_STEPS_MAX = 100_000
USABLE_FID_FACTOR = 2.0  # "usable": FID within this factor of the dense model's (same setup)


@functools.lru_cache(maxsize=None)
def structured_methods() -> Tuple[str, ...]:
    """The structured-prune stage's importance choices (from its Config)."""
    from .compress import describe_stage

    return tuple(next(o["choices"] for o in describe_stage("structured-prune")
                      if o["name"] == "importance"))


def methods() -> List[str]:
    """The pruning methods: the structured importances, then unstructured L1."""
    return [*structured_methods(), UNSTRUCTURED]


def method_label(method: str) -> str:
    return "unstructured (L1)" if method == UNSTRUCTURED else f"structured · {method}"


@functools.lru_cache(maxsize=None)
def _option_default(stage: str, name: str):
    from .compress import describe_stage

    return next(o["default"] for o in describe_stage(stage) if o["name"] == name)


@functools.lru_cache(maxsize=None)
def kd_scales() -> Tuple[int, ...]:
    """Student scales the distill stage takes (its module's SCALES: 1 = the current model)."""
    from .compress.distill import SCALES

    return tuple(SCALES)


def kd_label(kd: int) -> str:
    if not kd:
        return "off"
    if kd == 1:
        return "s=1: into the (pruned) model"
    return f"s={kd}: fresh, channels ÷ {kd}"


def lora_label(r: int) -> str:
    return "off" if not r else f"r = {r}"


def cache_label(interval: int) -> str:
    return "off" if not interval else f"every {interval} steps"


@dataclass(frozen=True)
class Controls:
    """The Explore page's settings; :func:`recipe_of` turns them into a recipe."""

    base: str = "embedded"
    ratio: float = 0.0          # prune ratio, 0 = no pruning
    method: str = "l1"          # a structured importance, or UNSTRUCTURED
    kd: int = 0                 # 0 = off, else the student scale s (1, 2, 4)
    kd_frac: float = field(default_factory=lambda: _option_default("distill", "kd_frac"))
    lora: int = 0               # 0 = off, else the adapter rank r
    quant: str = "none"         # one of QUANT
    sampler: str = "ddim"
    steps: int = 50             # sampling steps
    cache: int = 0              # 0 = off, else the deepcache interval
    train_steps: int = 400      # recovery training (fine-tune, distill or LoRA), the sweep's


def choices_of(name: str) -> Optional[list]:
    """The allowed values of a control (None: free text / number)."""
    return {"ratio": list(RATIOS), "method": methods(), "kd": [0, *kd_scales()],
            "lora": [0, *LORA_RANKS], "quant": list(QUANT), "sampler": list(SAMPLER_NAMES),
            "steps": list(STEPS), "cache": [0, *CACHE_INTERVALS]}.get(name)


def check_controls(c: Controls) -> Controls:
    """``c`` if every control holds an allowed value, else a LiteDiffError naming it."""
    for f in fields(Controls):
        value, allowed = getattr(c, f.name), choices_of(f.name)
        if allowed is not None and value not in allowed:
            raise LiteDiffError(f"{f.name} must be one of {', '.join(map(str, allowed))}, "
                                f"not {value!r}")
    if not isinstance(c.base, str) or not c.base.strip():
        raise LiteDiffError("base must name a model (embedded, a folder or a hub id)")
    if not (0.0 <= c.kd_frac <= 1.0) or abs(c.kd_frac * 10 - round(c.kd_frac * 10)) > 1e-9:
        raise LiteDiffError(f"kd_frac must be 0, 0.1, … 1, not {c.kd_frac!r}")
    if isinstance(c.train_steps, bool) or not isinstance(c.train_steps, int) or \
            not 1 <= c.train_steps <= TRAIN_STEPS_MAX:
        raise LiteDiffError(f"train_steps must be a whole number from 1 to {TRAIN_STEPS_MAX:,}, "
                            f"not {c.train_steps!r}")
    return c


def trains(c: Controls) -> bool:
    """Whether the recipe of ``c`` has a training stage (the training-steps control applies)."""
    return bool(c.ratio or c.kd or c.lora)


def stages_of(c: Controls) -> List[dict]:
    """The recipe stages the controls define (see the module docstring); LiteDiffError for a
    combination that cannot run."""
    check_controls(c)
    fresh = c.kd in KD_SCALES and c.kd != 1
    if fresh and c.ratio:
        raise LiteDiffError(f"KD s={c.kd} trains a fresh student with channels ÷ {c.kd} from "
                            f"scratch, which replaces the pruned model: set the prune ratio to "
                            f"0, or use s=1 to distill into the pruned model")
    if fresh and c.lora:
        raise LiteDiffError(f"LoRA adapts an existing model; KD s={c.kd} trains a fresh student "
                            f"whole: set LoRA off, or use KD s=1")
    if c.quant == "int8" and c.cache:
        raise LiteDiffError("feature caching wraps the PyTorch UNet, but the ONNX Runtime int8 "
                            "model runs its graph whole: choose a simulated quantization or "
                            "caching off")
    stages: List[dict] = []
    if fresh:
        stages.append({"stage": "distill", "config": {"steps": c.train_steps,
                                                      "kd_frac": c.kd_frac, "fresh": True,
                                                      "scale": c.kd}})
    else:
        if c.ratio:
            if c.method == UNSTRUCTURED:
                stages.append({"stage": "unstructured-prune",
                               "config": {"ratio": c.ratio, "method": "l1"}})
            else:
                stages.append({"stage": "structured-prune",
                               "config": {"ratio": c.ratio, "importance": c.method}})
        if c.lora:
            stages.append({"stage": "lora", "config": {
                "r": c.lora, "steps": c.train_steps,
                "kd_frac": c.kd_frac if c.kd == 1 else 0.0}})
        elif c.kd == 1:
            stages.append({"stage": "distill", "config": {"steps": c.train_steps,
                                                          "kd_frac": c.kd_frac}})
        elif c.ratio:
            stages.append({"stage": "finetune", "config": {"steps": c.train_steps}})
    if c.quant == "int8":
        stages.append({"stage": "quant-onnx-int8", "config": {}})
    elif c.quant in ("w8a8", "w4a8"):
        stages.append({"stage": "quant-simulated",
                       "config": {"weight_bits": int(c.quant[1]), "act_bits": 8}})
    if c.cache:
        stages.append({"stage": "deepcache", "config": {"interval": c.cache}})
    return stages


def eval_of(c: Controls, grid: Optional[dict] = None) -> dict:
    """The evaluation of the recipe: the grid's setup (sample count, latency batch: see
    :func:`grid_eval`; default :data:`GRID_EVAL`) at the chosen sampler and steps."""
    return {**GRID_EVAL, **(grid or {}), "sampler": c.sampler, "steps": c.steps}


def recipe_of(c: Controls, grid: Optional[dict] = None) -> Recipe:
    """The one recipe the controls define (LiteDiffError if it cannot run); ``grid``: the
    evaluation setup of the stored runs it is compared with (:func:`grid_eval`)."""
    return Recipe(base=c.base.strip(), stages=stages_of(c), eval=eval_of(c, grid))


def dense_recipe_of(c: Controls, grid: Optional[dict] = None) -> Recipe:
    """The dense base model with the same base and evaluation setup: the side-by-side reference."""
    return Recipe(base=c.base.strip(), stages=[], eval=eval_of(c, grid))


def grid_of(recipe: dict) -> dict:
    """The grid part of a recipe's evaluation setup (sample count, latency batch)."""
    ev = recipe.get("eval") or {}
    return {k: ev.get(k, v) for k, v in GRID_EVAL.items()}


def grid_eval(recipes: Iterable[dict], base: str) -> dict:
    """The evaluation setup (sample count, latency batch) most stored runs of ``base`` that the
    controls can express share — what the page evaluates new recipes with, so that settings on
    the grid find them (the shipped sweep: 200 samples). :data:`GRID_EVAL` when none."""
    from collections import Counter

    counts = Counter()
    for recipe in recipes:
        if (recipe.get("base") or "").strip() == base.strip() and controls_of(recipe):
            counts[tuple(sorted(grid_of(recipe).items()))] += 1
    if not counts:
        return dict(GRID_EVAL)
    default = tuple(sorted(GRID_EVAL.items()))
    best = max(counts.items(), key=lambda kv: (kv[1], kv[0] == default))
    return dict(best[0])


def controls_of(recipe: dict) -> Optional[Controls]:
    """The controls that give exactly this recipe (same key), or None if the Explore controls
    cannot express it (other options, another sample count, a stage they do not offer)."""
    try:
        stages = [dict(s) for s in recipe.get("stages") or []]
        ev = recipe.get("eval") or {}
        kw = {"base": recipe.get("base", ""), "sampler": ev.get("sampler", "ddim"),
              "steps": ev.get("steps", 50)}
        if stages and stages[-1]["stage"] == "deepcache":
            kw["cache"] = stages.pop()["config"]["interval"]
        if stages and stages[-1]["stage"] == "quant-onnx-int8":
            stages.pop()
            kw["quant"] = "int8"
        elif stages and stages[-1]["stage"] == "quant-simulated":
            kw["quant"] = f"w{stages.pop()['config'].get('weight_bits', 8)}a8"
        for s in stages:
            name, cfg = s["stage"], s.get("config") or {}
            if name == "structured-prune":
                kw.update(ratio=cfg["ratio"], method=cfg["importance"])
            elif name == "unstructured-prune":
                kw.update(ratio=cfg["ratio"], method=UNSTRUCTURED)
            elif name == "finetune":
                kw["train_steps"] = cfg["steps"]
            elif name == "distill":
                kw.update(kd=cfg["scale"] if cfg.get("fresh") else 1, kd_frac=cfg["kd_frac"],
                          train_steps=cfg["steps"])
            elif name == "lora":
                kw.update(lora=cfg["r"], train_steps=cfg["steps"])
                if cfg.get("kd_frac"):
                    kw.update(kd=1, kd_frac=cfg["kd_frac"])
            else:
                return None
        c = Controls(**kw)
        same = recipe_of(c, grid_of(recipe)).key() == Recipe.from_dict(dict(recipe)).key()
        return c if same else None
    except (LiteDiffError, KeyError, TypeError, ValueError, AttributeError):
        return None


# ----------------------------------------------------------------------------- the shipped grid

def shipped_grid(base: str = "embedded") -> List[Tuple[str, Controls]]:
    """The settings whose runs ship in ``cached_results/`` (``benchmarks/explore_grid.py`` runs
    them), each with why it is there, cheapest and most telling first: every control's positions
    one factor at a time around the defaults (the dense model at DDIM 50; structured pruning at
    30 %, the LiteDiffusion default, for the method, KD and LoRA rank; the fresh KD students
    with the 1,600 steps the sweep gave them), and LiteDiffusion's Table 6 combinations at its
    chosen ratio p = 0.5: Quant(Prune), KD(Prune), KD(LoRA(Prune)). Not in the grid (each a
    training run more): Quant(KD(Prune)) and the quantized fresh students Quant(KD(BM, s))."""
    d = Controls(base=base)
    out: List[Tuple[str, Controls]] = [("the dense model", d)]
    out += [("sampler", replace(d, sampler=s)) for s in SAMPLER_NAMES if s != d.sampler]
    out += [("sampling steps", replace(d, steps=k)) for k in STEPS if k != d.steps]
    out += [("fewer steps with a better solver", replace(d, sampler="dpm-solver++", steps=10))]
    out += [("feature caching", replace(d, cache=k)) for k in CACHE_INTERVALS]
    out += [("quantization", replace(d, quant=q)) for q in QUANT if q != d.quant]
    out += [("prune ratio", replace(d, ratio=r)) for r in RATIOS if r]
    p30, p50 = replace(d, ratio=0.3), replace(d, ratio=0.5)
    out += [("KD", replace(p30, kd=1)),
            ("Table 6: KD(BM, Prune(BM, p=0.5), s=1)", replace(p50, kd=1))]
    out += [("LoRA rank", replace(p30, kd=1, lora=r)) for r in LORA_RANKS]
    out += [("pruning method", replace(p30, method=m)) for m in methods() if m != d.method]
    # fresh students learn from scratch: the sweep gave them 1,600 steps, not 400
    out += [("KD student scale", replace(d, kd=k, train_steps=1600))
            for k in kd_scales() if k != 1]
    out += [("Table 6: Quant(Prune(BM, p=0.5), int8)", replace(p50, quant="int8")),
            ("Table 6: KD(BM, LoRA(Prune(BM, p=0.5), s=1), r=2)", replace(p50, kd=1, lora=2))]
    seen, unique = set(), []
    for why, c in out:
        if c not in seen:
            seen.add(c)
            unique.append((why, check_controls(c)))
    return unique


# ----------------------------------------------------------------------------- the URL

def _fmt(name: str, value) -> str:
    if name in ("kd", "lora", "cache"):
        return str(value) if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def to_query(c: Controls) -> Dict[str, str]:
    """The controls as URL query parameters (every control, so a link reproduces the view)."""
    return {f.name: _fmt(f.name, getattr(c, f.name)) for f in fields(Controls)}


def _expected(name: str) -> str:
    allowed = choices_of(name)
    if allowed is not None:
        return "one of " + ", ".join(_fmt(name, v) for v in allowed)
    return {"base": "a model name", "kd_frac": "a number 0, 0.1, … 1",
            "train_steps": f"a whole number from 1 to {TRAIN_STEPS_MAX}"}[name]


def _parse(name: str, text: str):
    """One control's value from its query text (ValueError if it is not an allowed value)."""
    text = text.strip()
    default = getattr(Controls(), name)
    if name in ("kd", "lora", "cache"):
        value = 0 if text.lower() in ("off", "0", "") else int(text)
    elif isinstance(default, bool):
        raise ValueError(name)
    elif isinstance(default, int):
        value = int(text)
    elif isinstance(default, float):
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        value = round(value, 1) if abs(value * 10 - round(value * 10)) < 1e-9 else value
    else:
        value = text
    check_controls(replace(Controls(), **{name: value}))
    return value


def from_query(params: Mapping[str, object], start: Optional[Controls] = None
               ) -> Tuple[Controls, List[str]]:
    """Controls from URL query parameters over ``start`` (default: the defaults), and a warning
    for each parameter that is not an Explore setting or not a valid value (which keeps the
    default)."""
    start = start or Controls()
    names = [f.name for f in fields(Controls)]
    values, warnings = {}, []
    for key, raw in params.items():
        text = raw[-1] if isinstance(raw, (list, tuple)) and raw else raw
        text = "" if text is None else str(text)
        if key not in names:
            warnings.append(f"URL parameter `{key}` is not an Explore setting: ignored "
                            f"(settings: {', '.join(names)})")
            continue
        try:
            values[key] = _parse(key, text)
        except (ValueError, LiteDiffError):
            warnings.append(f"URL parameter `{key}={text}` is not valid ({_expected(key)}): "
                            f"using the default {_fmt(key, getattr(start, key))}")
    return replace(start, **values), warnings


# ----------------------------------------------------------------------------- neighbours

def stage_names(c: Controls) -> Tuple[str, ...]:
    try:
        return tuple(s["stage"] for s in stages_of(c))
    except LiteDiffError:
        return ()


def distance(a: Controls, b: Controls) -> float:
    """How far apart two settings are: one unit per slider notch of the prune ratio, per
    changed choice, per factor 2 of sampling or training steps (kd_frac: per 0.1, half)."""
    def log2(x, y):
        return abs(math.log2(max(x, 1) / max(y, 1)))

    d = abs(a.ratio - b.ratio) * 10
    d += (a.method != b.method) * (1.0 if a.ratio and b.ratio else 0.0)
    d += (a.kd != b.kd) + (a.lora != b.lora) + (a.quant != b.quant) + (a.cache != b.cache)
    d += (a.sampler != b.sampler) + log2(a.steps, b.steps)
    if a.kd and b.kd:
        d += abs(a.kd_frac - b.kd_frac) * 5
    if trains(a) and trains(b):
        d += log2(a.train_steps, b.train_steps)
    d += (a.base.strip() != b.base.strip()) * 100
    return round(d, 6)


def nearest(target: Controls, candidates: Iterable[Tuple[Controls, object]], k: int = 5
            ) -> List[Tuple[float, Controls, object]]:
    """The ``k`` candidates (controls, payload) closest to ``target``: same base only; those
    with the same stage types first, then by :func:`distance`; ``target`` itself left out."""
    same, out = stage_names(target), []
    for c, payload in candidates:
        if c == target or c.base.strip() != target.base.strip():
            continue
        out.append(((stage_names(c) != same, distance(target, c)), c, payload))
    out.sort(key=lambda t: t[0])
    return [(key[1], c, payload) for key, c, payload in out[:k]]


# ----------------------------------------------------------------------------- budget warning

def _family(recipe: dict) -> Optional[dict]:
    """What a recipe removes (kind, ratio, method) and how long it trains afterwards."""
    from .compress import STAGES

    fam, steps = None, 0
    for s in recipe.get("stages") or []:
        name, cfg = s["stage"], s.get("config") or {}
        if name == "structured-prune":
            fam = {"kind": "structured", "ratio": float(cfg.get("ratio", 0)),
                   "method": cfg.get("importance")}
        elif name == "unstructured-prune":
            fam = {"kind": "unstructured", "ratio": float(cfg.get("ratio", 0)),
                   "method": cfg.get("method")}
        elif name == "distill" and cfg.get("fresh"):
            fam = {"kind": "fresh", "ratio": float(cfg.get("scale", 1)), "method": None}
        if name in STAGES and STAGES[name].trains:
            steps += int(cfg.get("steps", 0))
    if fam is None:
        return None
    return {**fam, "steps": steps}


def _setup(recipe: dict) -> tuple:
    ev = recipe.get("eval") or {}
    return (recipe.get("base"), recipe.get("dataset"), ev.get("n"), ev.get("sampler"),
            ev.get("steps"), ev.get("eta", 0.0) or 0.0)


def _finished(runs: Iterable[dict]) -> Tuple[List[dict], dict]:
    """The finished runs with an FID, and the dense model's FID at each evaluation setup."""
    runs = [r for r in runs if r.get("status") == "done" and r.get("fid") is not None]
    return runs, {_setup(r["recipe"]): r["fid"] for r in runs if not r["recipe"].get("stages")}


def _same_kind(mine: dict, base: str, runs: List[dict], dense: dict):
    """(family, run, dense FID) of each run of ``base`` that removes what ``mine`` removes
    (its :func:`_family` kind) and has a dense run at its evaluation setup."""
    for r in runs:
        fam, ref = _family(r["recipe"]), dense.get(_setup(r["recipe"]))
        if fam is not None and ref is not None and fam["kind"] == mine["kind"] and \
                r["recipe"].get("base") == base:
            yield fam, r, ref


def budget_warning(recipe: Recipe, runs: Iterable[dict]) -> Optional[str]:
    """A warning when the stored runs show that this recipe's pruning (or fresh student) needs
    more recovery training than it gets: every stored run of the same kind at about the same
    ratio (or an easier one) with at least as many training steps ended with an FID above
    USABLE_FID_FACTOR × the dense model's (same base and evaluation setup). ``runs``: dicts
    with ``recipe`` (plain data), ``fid`` and ``status``. None when no stored run says so."""
    mine = _family(recipe.to_dict())
    if mine is None:
        return None
    runs, dense = _finished(runs)
    evidence = [{**fam, "factor": r["fid"] / ref}
                for fam, r, ref in _same_kind(mine, recipe.base, runs, dense)
                if fam["steps"] >= mine["steps"]]
    if not evidence:
        return None
    # the closest ratio the store has, at or below this one (less pruning recovers easier)
    near = [e for e in evidence if abs(e["ratio"] - mine["ratio"]) < 0.05 + 1e-9]
    if not near:
        lower = [e["ratio"] for e in evidence if e["ratio"] <= mine["ratio"]]
        if not lower:
            return None
        near = [e for e in evidence if abs(e["ratio"] - max(lower)) < 1e-9]
    same_method = [e for e in near if e["method"] == mine["method"]]
    near = same_method or near
    # the fewest steps that recovered (a long distillation can, where 400 steps did not)
    enough = min((e["steps"] for e in near if e["factor"] <= USABLE_FID_FACTOR), default=None)
    chosen = [e for e in near if e["factor"] > USABLE_FID_FACTOR]
    if not chosen or (enough is not None and enough <= mine["steps"]):
        return None
    lo, hi = min(e["factor"] for e in chosen), max(e["factor"] for e in chosen)
    s_lo, s_hi = min(e["steps"] for e in chosen), max(e["steps"] for e in chosen)
    ratio = chosen[0]["ratio"]
    what = {"structured": f"structured pruning at ratio {ratio:g}",
            "unstructured": f"unstructured pruning at ratio {ratio:g}",
            "fresh": f"fresh students with channels ÷ {ratio:g}"}[mine["kind"]]
    if same_method and mine["method"]:
        what += f" ({mine['method']})"
    steps = f"{s_lo:,}" if s_lo == s_hi else f"{s_lo:,}–{s_hi:,}"
    factor = f"{lo:.1f}×" if abs(hi - lo) < 0.05 else f"{lo:.1f}–{hi:.1f}×"
    return (f"Too little recovery training, going by the stored runs: {len(chosen)} stored "
            f"run{'s' if len(chosen) > 1 else ''} of {what} with {steps} training steps "
            f"(this recipe: {mine['steps']:,}) {'show' if len(chosen) > 1 else 'shows'} FID {factor} the dense model's (usable: "
            f"within {USABLE_FID_FACTOR:g}×). Recovery needs more training steps than that "
            f"(see benchmarks/results.md)"
            + (f"; a stored run of it recovered with {enough:,} steps (Recovery page)."
               if enough is not None else "."))


def recovery_note(recipe: Recipe, fid: Optional[float], runs: Iterable[dict]) -> Optional[str]:
    """For a stored result that prunes (or trains a fresh student) and ends with an FID above
    USABLE_FID_FACTOR × the dense model's at the same evaluation: a note that it is not
    recovered, naming the best-recovered stored run of the same kind (FID ratio to its own
    dense reference) when one trained longer. None when the result is usable or not such a
    recipe. ``runs`` as for :func:`budget_warning` (plus an optional ``name``)."""
    mine = _family(recipe.to_dict())
    if mine is None or fid is None:
        return None
    runs, dense = _finished(runs)
    ref = dense.get(_setup(recipe.to_dict()))
    if ref is None or fid <= USABLE_FID_FACTOR * ref:
        return None
    what = {"structured": "structured pruning", "unstructured": "unstructured pruning",
            "fresh": "a fresh student"}[mine["kind"]]
    text = (f"Not recovered: FID {fid / ref:.1f}× the dense model's ({fid:.1f} vs {ref:.1f}, "
            f"same evaluation) after {mine['steps']:,} training steps of recovery.")
    better = [(r["fid"] / base_fid, fam, r, base_fid)
              for fam, r, base_fid in _same_kind(mine, recipe.base, runs, dense)
              if fam["steps"] > mine["steps"]]
    if better:
        factor, fam, r, base_fid = min(better, key=lambda b: b[0])
        ev = r["recipe"].get("eval") or {}
        name = r.get("name") or r["recipe"].get("name") or "a stored run"
        text += (f" More training is what {what} needs: with {fam['steps']:,} steps, {name} "
                 f"reaches FID {r['fid']:.1f} against the dense {base_fid:.1f} "
                 f"({factor:.2f}×; {ev.get('n')} samples, {ev.get('sampler')} {ev.get('steps')} "
                 f"steps) — its curve is on the Recovery page.")
    else:
        text += (f" No stored run of {what} trained longer: whether more steps recover it, "
                 f"a longer run will tell (benchmarks/recovery.md has the curves).")
    return text


# ----------------------------------------------------------------------------- time estimate

def measure_rates(unet, batch_size: int = 16, device: str = "cpu") -> dict:
    """Seconds of one training step (forward, backward, Adam; on a copy) and of one sampling
    step (a forward without gradients) of ``unet`` on a batch, the faster of two timings
    after a warm-up call, on ``device``; with the 1-minute load average and CPU count at that time
    (a busy machine makes every figure slower)."""
    import copy

    import torch

    model = copy.deepcopy(unet).to(device)
    cfg = model.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, cfg.in_channels, size, size, generator=gen).to(device)
    t = torch.randint(0, 1000, (batch_size,), generator=gen).to(device)
    model.eval()
    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    with torch.no_grad():
        model(x, t)
        sample_s = min(timed(lambda: model(x, t)) for _ in range(2))
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(x, t).sample, x)
        loss.backward()
        opt.step()

    step()
    train_s = min(timed(step) for _ in range(2))
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"batch_size": batch_size, "train_step_s": train_s, "sample_step_s": sample_s,
            "device": str(device), "threads": torch.get_num_threads(), "load": load,
            "cpus": os.cpu_count()}


def estimate_seconds(recipe: Recipe, rates: dict) -> dict:
    """A rough duration of ``run_recipe(recipe)`` from measured rates (:func:`measure_rates`),
    at the dense base's speed (a pruned or smaller model is faster): training steps × a
    training step (+ the teacher's forward when distilling), gradient rankings and calibration
    as UNet calls, and the evaluation's sampling (FID samples, consistency, per-image and step
    timing against the base) as image-steps. ``{"total_s", "train_s", "sample_s",
    "image_steps"}``."""
    from .compress import make_stage
    from .runs import LATENCY_ROUNDS, REFERENCE_SAMPLING, unet_calls

    b = rates["batch_size"]
    per_train = rates["train_step_s"] / b            # one image through a training step
    per_image_step = rates["sample_step_s"] / b      # one image through one UNet call
    train_images = forward_images = 0.0
    interval, train_steps = None, 0
    for spec in recipe.stages:
        stage, cfg = make_stage(spec), spec["config"]
        if stage.trains:
            train_steps += cfg["steps"]
            train_images += cfg["steps"] * cfg["batch_size"]
            if cfg.get("kd_frac", 0) > 0:
                forward_images += cfg["steps"] * cfg["batch_size"]   # the teacher
        elif spec["stage"] == "structured-prune" and cfg["importance"] == "taylor":
            train_images += cfg["batches"] * cfg["batch_size"]
        elif spec["stage"] == "structured-prune" and cfg["importance"] == "diff-pruning":
            train_images += cfg["timesteps"] * cfg["batch_size"]     # at most (threshold)
        elif spec["stage"].startswith("quant-") and "calib_images" in cfg:
            forward_images += cfg["calib_images"] * cfg["calib_steps"]
        elif spec["stage"] == "deepcache":
            interval = cfg["interval"]
    ev = recipe.eval
    full, cached = unet_calls(ev["steps"], interval)
    own = full + 0.5 * cached                          # a cached step is a part of a full one
    ref = REFERENCE_SAMPLING["steps"]
    n_cons = min(ev["n"], 256)
    lat_b = ev["latency_batch"]
    image_steps = (ev["n"] * own                       # FID samples
                   + n_cons * (own + ref)              # consistency: own + the base's DDIM 50
                   + LATENCY_ROUNDS * lat_b * (ref + own)        # per-image timing rounds
                   + LATENCY_ROUNDS * 2 * lat_b * 13)            # step latency (3 + 10 calls)
    train_s = train_images * per_train + forward_images * per_image_step
    sample_s = image_steps * per_image_step
    return {"total_s": train_s + sample_s, "train_s": train_s, "sample_s": sample_s,
            "image_steps": int(image_steps), "train_images": int(train_images),
            "train_steps": train_steps}


def minutes_label(seconds: float) -> str:
    """'≈ N min' (at least 1)."""
    return f"≈ {max(1, math.ceil(seconds / 60))} min"
