"""The Explore page and its core (``litediff_core.explore``): the controls → recipe mapping,
the URL parameters, neighbours, the training-budget warning and the time estimate (pure unit
tests), then the page in AppTest — a grid setting from a store filled with tiny real runs shows
its stored result without a job, every control changes the recipe, an off-grid setting on the
shipped cached results shows the estimate and the warning, links reproduce the controls and a
malformed parameter warns and falls back.

Tiny on purpose: a 28×28 UNet of ~0.2 M params, eval n=16 with 5 DDIM steps, latency batch 2
(the page evaluates new recipes like the stored runs of their base, so these are its grid)."""

import json
import shutil
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from litediff_core import explore as ex
from litediff_core.compress import describe_stage
from litediff_core.errors import LiteDiffError
from litediff_core.recipes import SAMPLER_NAMES, Recipe
from litediff_core.runs import RunStore

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `pages._shared` lives next to app.py
    sys.path.insert(0, str(REPO))

APP = REPO / "app.py"
CACHED = REPO / "cached_results"
GRID = {"n": 16, "latency_batch": 2}


def stages(c: ex.Controls) -> list:
    """Stage names with the options the controls set (defaults left out)."""
    out = []
    for s in ex.recipe_of(c).stages:
        defaults = {o["name"]: o["default"] for o in describe_stage(s["stage"])}
        out.append((s["stage"], {k: v for k, v in s["config"].items()
                                 if (list(v) if isinstance(v, tuple) else v) != defaults[k]}))
    return out


# ----------------------------------------------------------------------------- the mapping

def test_default_controls_give_the_dense_recipe():
    recipe = ex.recipe_of(ex.Controls())
    assert recipe.stages == [] and recipe.base == "embedded" and recipe.seed == 0
    assert recipe.eval == {"n": 200, "sampler": "ddim", "steps": 50, "latency_batch": 16,
                           "eta": 0.0}
    assert recipe.key() == Recipe(base="embedded", eval={"n": 200}).key()
    if CACHED.is_dir():  # the shipped sweep's dense run at 200 samples
        assert RunStore(CACHED).find(recipe) is not None


def test_control_defaults_and_choices_come_from_the_stages():
    distill = {o["name"]: o for o in describe_stage("distill")}
    assert ex.Controls().kd_frac == distill["kd_frac"]["default"]
    assert "scale" in distill and "fresh" in distill
    importance = next(o for o in describe_stage("structured-prune") if o["name"] == "importance")
    assert ex.methods() == [*importance["choices"], ex.UNSTRUCTURED]
    assert ex.kd_scales() == (1, 2, 4)
    assert ex.choices_of("sampler") == list(SAMPLER_NAMES)
    assert ex.choices_of("ratio") == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert [ex.QUANT_LABELS[q] for q in ex.QUANT] == [
        "none (fp32)", "int8 (real, ONNX Runtime)", "W8A8 (simulated)", "W4A8 (simulated)"]


def test_every_control_changes_the_recipe_as_expected():
    d = ex.Controls()
    pruned = replace(d, ratio=0.3)
    cases = [
        (pruned, [("structured-prune", {}), ("finetune", {"steps": 400})]),
        (replace(d, ratio=0.5, method="taylor"),
         [("structured-prune", {"ratio": 0.5, "importance": "taylor"}),
          ("finetune", {"steps": 400})]),
        (replace(d, ratio=0.3, method=ex.UNSTRUCTURED),
         [("unstructured-prune", {"ratio": 0.3}), ("finetune", {"steps": 400})]),
        (replace(pruned, train_steps=1200),
         [("structured-prune", {}), ("finetune", {"steps": 1200})]),
        (replace(pruned, kd=1), [("structured-prune", {}), ("distill", {"steps": 400})]),
        (replace(pruned, kd=1, kd_frac=0.4),
         [("structured-prune", {}), ("distill", {"steps": 400, "kd_frac": 0.4})]),
        (replace(d, kd=1), [("distill", {"steps": 400})]),     # self-distillation, no pruning
        (replace(d, kd=2, train_steps=1600),
         [("distill", {"steps": 1600, "fresh": True, "scale": 2})]),
        (replace(d, kd=4), [("distill", {"steps": 400, "fresh": True, "scale": 4})]),
        (replace(pruned, lora=4), [("structured-prune", {}), ("lora", {"steps": 400})]),
        (replace(pruned, lora=2, kd=1),
         [("structured-prune", {}), ("lora", {"r": 2, "steps": 400, "kd_frac": 0.7})]),
        (replace(d, lora=8), [("lora", {"r": 8, "steps": 400})]),
        (replace(d, quant="int8"), [("quant-onnx-int8", {})]),
        (replace(d, quant="w8a8"), [("quant-simulated", {})]),
        (replace(d, quant="w4a8"), [("quant-simulated", {"weight_bits": 4})]),
        (replace(pruned, quant="int8"),
         [("structured-prune", {}), ("finetune", {"steps": 400}), ("quant-onnx-int8", {})]),
        (replace(d, cache=2), [("deepcache", {"interval": 2})]),
        (replace(pruned, quant="w8a8", cache=5),
         [("structured-prune", {}), ("finetune", {"steps": 400}), ("quant-simulated", {}),
          ("deepcache", {"interval": 5})]),
    ]
    for c, expected in cases:
        assert stages(c) == expected, c
    # the prune ratio's default is 0.3 in the stage: listed only when it differs
    assert ex.recipe_of(pruned).stages[0]["config"]["ratio"] == 0.3
    # training steps are used only where something trains
    assert ex.recipe_of(replace(d, train_steps=999)).key() == ex.recipe_of(d).key()
    assert ex.recipe_of(replace(d, kd_frac=0.2)).key() == ex.recipe_of(d).key()
    assert ex.recipe_of(replace(d, method="random")).key() == ex.recipe_of(d).key()
    # sampling, base and the grid's evaluation setup
    r = ex.recipe_of(replace(d, sampler="dpm-solver++", steps=10, base="./my-model"), GRID)
    assert r.base == "./my-model" and r.stages == []
    assert r.eval == {"n": 16, "sampler": "dpm-solver++", "steps": 10, "latency_batch": 2,
                      "eta": 0.0}


def test_combinations_that_cannot_run_are_refused_with_a_message():
    d = ex.Controls()
    for c, words in [(replace(d, kd=2, ratio=0.3), "prune ratio to 0"),
                     (replace(d, kd=4, lora=2), "LoRA"),
                     (replace(d, quant="int8", cache=3), "ONNX Runtime"),
                     (replace(d, steps=5, cache=5), "interval 5 must be below"),
                     (replace(d, base="  "), "base"),
                     (replace(d, ratio=0.35), "ratio"),
                     (replace(d, train_steps=0), "train_steps")]:
        with pytest.raises(LiteDiffError, match=words):
            ex.recipe_of(c)


def test_controls_of_inverts_the_mapping_and_reads_the_shipped_runs():
    d = ex.Controls()
    for c in [d, replace(d, ratio=0.7, method="diff-pruning", train_steps=50),
              replace(d, ratio=0.3, kd=1, lora=2), replace(d, kd=2, train_steps=1600),
              replace(d, ratio=0.5, quant="int8"), replace(d, quant="w4a8", cache=3, steps=20),
              replace(d, ratio=0.2, method=ex.UNSTRUCTURED, sampler="ams", steps=10),
              replace(d, lora=4, kd=1, kd_frac=0.3)]:
        assert ex.controls_of(ex.recipe_of(c).to_dict()) == c
        assert ex.controls_of(ex.recipe_of(c, GRID).to_dict()) == c
    # options the controls do not offer: not expressible
    other = Recipe(stages=[{"stage": "finetune", "config": {"steps": 400, "lr": 1e-3}}])
    assert ex.controls_of(other.to_dict()) is None
    assert ex.controls_of(Recipe(stages=[{"stage": "low-rank"}]).to_dict()) is None
    assert ex.controls_of({"stages": "nonsense"}) is None
    if not CACHED.is_dir():
        return
    store, mapped = RunStore(CACHED), 0
    for d_ in store.runs():
        if d_.name.startswith("."):
            continue
        recipe = store.load(d_.name)["recipe"]
        c = ex.controls_of(recipe)
        if c is not None:
            mapped += 1
            assert ex.recipe_of(c, ex.grid_of(recipe)).key()[:12] == d_.name
    assert mapped >= 20  # the sweep's structured, unstructured L1, KD, LoRA and quantization runs


def test_grid_eval_is_the_setup_most_runs_of_the_base_share():
    c = ex.Controls(base="tiny")
    runs = [ex.recipe_of(c, GRID).to_dict(), ex.recipe_of(replace(c, ratio=0.5), GRID).to_dict(),
            ex.recipe_of(replace(c, quant="w8a8")).to_dict(),
            ex.recipe_of(ex.Controls()).to_dict()]
    assert ex.grid_eval(runs, "tiny") == GRID
    assert ex.grid_eval(runs, "embedded") == ex.GRID_EVAL
    assert ex.grid_eval([], "anything") == ex.GRID_EVAL


# ----------------------------------------------------------------------------- the URL

def test_query_parameters_round_trip():
    d = ex.Controls()
    for c in [d, replace(d, base="/some/folder", ratio=0.4, method=ex.UNSTRUCTURED, kd=1,
                         kd_frac=0.3, lora=8, quant="w4a8", sampler="dpm-solver++", steps=10,
                         cache=3, train_steps=2500)]:
        query = ex.to_query(c)
        assert all(isinstance(v, str) for v in query.values())
        assert set(query) == set(asdict(c))
        assert ex.from_query(query) == (c, [])
    assert ex.to_query(d)["kd"] == "off" and ex.to_query(d)["ratio"] == "0"
    assert ex.from_query({"ratio": ["0.1", "0.3"]})[0].ratio == 0.3  # the last value wins


def test_malformed_query_parameters_warn_and_fall_back():
    start = ex.Controls(base="embedded", train_steps=400)
    c, warnings = ex.from_query({"ratio": "abc", "kd": "3", "steps": "7", "quant": "int4",
                                 "train_steps": "-5", "kd_frac": "nan", "colour": "red",
                                 "lora": "2", "method": "taylor"}, start=start)
    assert c == replace(start, lora=2, method="taylor")
    text = "\n".join(warnings)
    for name in ("ratio=abc", "kd=3", "steps=7", "quant=int4", "train_steps=-5", "kd_frac=nan",
                 "`colour`"):
        assert name in text, name
    assert len(warnings) == 7
    assert "using the default 0" in text and "one of 5, 10, 20, 50" in text


# ----------------------------------------------------------------------------- neighbours, warning, estimate

def test_nearest_prefers_the_same_stage_types_then_the_closest_options():
    d = ex.Controls()
    target = replace(d, ratio=0.4, train_steps=300)
    cands = [(replace(d, ratio=0.3), "a"), (replace(d, ratio=0.7), "b"),
             (replace(d, ratio=0.5, kd=1), "c"), (d, "dense"),
             (replace(d, ratio=0.4, train_steps=400, base="other"), "other base"),
             (target, "itself")]
    got = [p for _, _, p in ex.nearest(target, cands, k=4)]
    assert got == ["a", "b", "c", "dense"]
    assert ex.distance(target, replace(d, ratio=0.3)) < ex.distance(target, replace(d, ratio=0.7))


def _run(c: ex.Controls, fid: float, grid=None) -> dict:
    return {"recipe": ex.recipe_of(c, grid).to_dict(), "fid": fid, "status": "done"}


def test_budget_warning_is_computed_from_the_stored_runs():
    d = ex.Controls()
    runs = [_run(d, 100.0), _run(replace(d, ratio=0.3), 640.0),
            _run(replace(d, ratio=0.3, method="taylor"), 420.0),
            _run(replace(d, ratio=0.3, method=ex.UNSTRUCTURED), 150.0),
            _run(replace(d, kd=2, train_steps=1600), 1000.0)]
    text = ex.budget_warning(ex.recipe_of(replace(d, ratio=0.3, train_steps=200)), runs)
    assert "6.4×" in text and "structured pruning at ratio 0.3 (l1)" in text
    assert "400 training steps" in text and "this recipe: 200" in text
    assert "benchmarks/results.md" in text
    # another importance: all structured runs at that ratio are the evidence
    text = ex.budget_warning(ex.recipe_of(replace(d, ratio=0.3, method="l2")), runs)
    assert "4.2–6.4×" in text and "2 stored runs" in text
    # an off-grid ratio: the closest lower ratio stored
    assert "ratio 0.3" in ex.budget_warning(ex.recipe_of(replace(d, ratio=0.4)), runs)
    # more steps than any stored run, a usable stored run, nothing stored, no pruning: silent
    assert ex.budget_warning(ex.recipe_of(replace(d, ratio=0.3, train_steps=5000)), runs) is None
    assert ex.budget_warning(ex.recipe_of(replace(d, ratio=0.3, method=ex.UNSTRUCTURED)),
                             runs) is None
    assert ex.budget_warning(ex.recipe_of(replace(d, ratio=0.1)), runs) is None
    assert ex.budget_warning(ex.recipe_of(replace(d, quant="w8a8")), runs) is None
    assert ex.budget_warning(ex.recipe_of(replace(d, ratio=0.3)), runs[1:]) is None  # no dense
    fresh = ex.budget_warning(ex.recipe_of(replace(d, kd=2, train_steps=1000)), runs)
    assert "fresh students with channels ÷ 2" in fresh and "10.0×" in fresh
    # a long recovery of the same pruning reached the dense FID: the short budget is still
    # warned about (and told what recovered it); that budget or more is not
    runs.append(_run(replace(d, ratio=0.3, train_steps=4000), 95.0))
    text = ex.budget_warning(ex.recipe_of(replace(d, ratio=0.3, train_steps=200)), runs)
    assert "6.4×" in text and "recovered with 4,000 steps" in text
    assert ex.budget_warning(ex.recipe_of(replace(d, ratio=0.3, train_steps=4000)), runs) is None


def test_a_stored_unrecovered_result_says_so_and_points_to_a_recovered_run():
    d = ex.Controls()
    grid = {"n": 1000, "latency_batch": 16}
    long = {**_run(replace(d, ratio=0.3, method="diff-pruning", kd=1, train_steps=4000), 74.1,
                   grid), "name": "recovery: Diff-Pruning 30 % + KD 4000"}
    runs = [_run(d, 100.0), _run(replace(d, ratio=0.3), 640.0), _run(d, 74.6, grid), long]
    pruned = ex.recipe_of(replace(d, ratio=0.3))
    text = ex.recovery_note(pruned, 640.0, runs)
    assert text.startswith("Not recovered: FID 6.4× the dense model's (640.0 vs 100.0")
    assert "after 400 training steps" in text
    assert "with 4,000 steps, recovery: Diff-Pruning 30 % + KD 4000 reaches FID 74.1 against " \
           "the dense 74.6 (0.99×; 1000 samples, ddim 50 steps)" in text
    assert "Recovery page" in text
    # usable, nothing that prunes, no dense reference at its setup: nothing to say
    assert ex.recovery_note(pruned, 150.0, runs) is None
    assert ex.recovery_note(ex.recipe_of(replace(d, quant="w8a8")), 900.0, runs) is None
    assert ex.recovery_note(pruned, 640.0, runs[1:]) is None
    # no longer run of that kind stored: it says that much, no more
    fresh = ex.recovery_note(ex.recipe_of(replace(d, kd=2, train_steps=1600)), 1000.0, runs)
    assert "after 1,600 training steps" in fresh and "No stored run of a fresh student" in fresh


def test_estimate_scales_with_the_training_steps_and_the_samples():
    rates = {"batch_size": 16, "train_step_s": 0.32, "sample_step_s": 0.08}
    d = ex.Controls()
    dense = ex.estimate_seconds(ex.recipe_of(d), rates)
    assert dense["train_s"] == 0 and dense["sample_s"] > 0
    pruned = ex.estimate_seconds(ex.recipe_of(replace(d, ratio=0.3)), rates)
    longer = ex.estimate_seconds(ex.recipe_of(replace(d, ratio=0.3, train_steps=800)), rates)
    assert pruned["train_steps"] == 400 and longer["train_s"] == pytest.approx(
        2 * pruned["train_s"])
    assert pruned["train_s"] == pytest.approx(400 * 64 * 0.32 / 16)  # batch 64 at 20 ms/image
    kd = ex.estimate_seconds(ex.recipe_of(replace(d, ratio=0.3, kd=1)), rates)
    assert kd["train_s"] > pruned["train_s"]  # the teacher's forward
    few = ex.estimate_seconds(ex.recipe_of(d, {"n": 16}), rates)
    assert few["sample_s"] < dense["sample_s"]
    cached = ex.estimate_seconds(ex.recipe_of(replace(d, cache=5)), rates)
    assert cached["sample_s"] < dense["sample_s"]
    assert ex.minutes_label(30) == "≈ 1 min" and ex.minutes_label(601) == "≈ 11 min"


def test_measure_rates_times_a_copy(tiny_unet):
    before = {k: v.clone() for k, v in tiny_unet.state_dict().items()}
    rates = ex.measure_rates(tiny_unet, batch_size=2)
    assert rates["train_step_s"] > 0 and rates["sample_step_s"] > 0
    assert rates["batch_size"] == 2
    assert all(torch.equal(before[k], v) for k, v in tiny_unet.state_dict().items())


# ----------------------------------------------------------------------------- the page

@pytest.fixture(scope="session")
def tiny(tmp_path_factory, fashion_mnist):
    """A tiny base model and a store with two real runs on the Explore grid of that base:
    the dense model and structured L1 50% + 2 fine-tune steps, both DDIM 5 steps."""
    from litediff_core.runs import run_recipe
    from tiny import save_tiny_base

    root = tmp_path_factory.mktemp("explore")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITEDIFF_CACHE", str(root / "cache"))
        base = save_tiny_base(root / "base")
        store = RunStore(root / "runs")
        dense = ex.Controls(base=base, steps=5)
        pruned = replace(dense, ratio=0.5, train_steps=2)
        ids = [run_recipe(ex.recipe_of(c, GRID), store, device="cpu").name
               for c in (dense, pruned)]
    return SimpleNamespace(base=base, store=root / "runs", ids=ids, dense=dense, pruned=pruned)


@pytest.fixture
def with_tiny(tiny, env, monkeypatch):
    """The tiny runs as the user store (read only)."""
    monkeypatch.setenv("LITEDIFF_RUNS", str(tiny.store))
    return tiny


@pytest.fixture
def shipped(env, monkeypatch):
    """The repository's cached_results as shipped, an empty user store."""
    if not (CACHED / "ada7a24fa55c").is_dir():
        pytest.skip("cached_results/ does not hold the shipped sweep")
    monkeypatch.setenv("LITEDIFF_CACHED_RESULTS", str(CACHED))
    return env


def explore(query: dict = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=300)
    at.switch_page("pages/explore.py")
    at.query_params.update(query or {})
    return at


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def jobs() -> list:
    from pages._shared import job_registry

    return job_registry().jobs()


def yaml_of(at) -> str:
    return next(c.value for c in at.code if "stages:" in c.value)


def labels(at) -> list:
    return [m.label for m in at.metric]


def until_estimate(at, timeout: float = 240):
    """Rerun until the time estimate shows: the throughput is measured in a worker thread
    (once per server) while the page stays responsive; AppTest never fires ``run_every``."""
    deadline = time.monotonic() + timeout
    while "Estimated run time" not in labels(ok(at)):
        assert time.monotonic() < deadline, "no time estimate"
        assert any("Timing one training step" in c.value for c in at.caption)
        time.sleep(0.5)
        at.run()
    return next(m for m in at.metric if m.label == "Estimated run time")


def test_a_grid_setting_shows_its_stored_result_without_a_job(with_tiny):
    before = len(jobs())
    at = explore(ex.to_query(with_tiny.pruned))
    t0 = time.perf_counter()
    ok(at.run())
    first = time.perf_counter() - t0
    body = " ".join(m.value for m in at.markdown)
    assert "Stored result" in body and with_tiny.ids[1] in body and "nothing was run" in body
    assert len(at.get("image")) == 2  # dense base and compressed side by side
    assert labels(at) == ["FID", "Parameters", "Size", "MACs / image / step",
                          "Speed-up per step", "Speed-up per image"]
    metrics = {m.label: m for m in at.metric}
    stored = json.loads((with_tiny.store / with_tiny.ids[1] / "metrics.json").read_text())
    assert metrics["FID"].value == f"{stored['fidelity']['fid']:.1f}"
    assert "the dense" in metrics["FID"].proto.delta
    assert metrics["Speed-up per image"].value == f"{stored['per_image']['speedup']:.2f}×"
    captions = " ".join(c.value for c in at.caption)
    assert "16 samples, ddim 5 steps" in captions and "[" in captions  # FID labels, intervals
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert figs[0]["data"][0]["type"] == "heatmap"
    assert figs[0]["data"][0]["y"] == ["channels kept"]
    ring = figs[1]["data"][-1]
    assert ring["name"] == "this recipe" and ring["marker"]["symbol"] == "circle-open"
    assert len(figs[1]["data"][0]["x"]) == 2  # both runs with 16 samples
    assert "Estimated run time" not in labels(at) and not any(b.key == "ex_run" for b in at.button)
    assert len(jobs()) == before  # nothing started
    t0 = time.perf_counter()
    ok(at.run())
    assert time.perf_counter() - t0 < 5, "a stored result must show at once once cached"
    assert first < 120


def test_every_control_changes_the_recipe_and_the_url(with_tiny):
    at = ok(explore(ex.to_query(with_tiny.pruned)).run())
    assert not [c for c in at.code if "stages:" in c.value]  # drawn once the expander opens
    at.session_state["ex_yaml"] = True
    current = with_tiny.pruned
    steps = [("ex_ratio", "slider", 0.3, {"ratio": 0.3}),
             ("ex_method", "selectbox", "taylor", {"method": "taylor"}),
             ("ex_method", "selectbox", ex.UNSTRUCTURED, {"method": ex.UNSTRUCTURED}),
             ("ex_kd", "selectbox", 1, {"kd": 1}),
             ("ex_kd_frac", "slider", 0.4, {"kd_frac": 0.4}),
             ("ex_lora", "selectbox", 4, {"lora": 4}),
             ("ex_quant", "selectbox", "w4a8", {"quant": "w4a8"}),
             ("ex_sampler", "selectbox", "dpm-solver++", {"sampler": "dpm-solver++"}),
             ("ex_steps", "radio", 10, {"steps": 10}),
             ("ex_cache", "radio", 3, {"cache": 3}),
             ("ex_train_steps", "number_input", 30, {"train_steps": 30})]
    for key, kind, value, change in steps:
        getattr(at, kind)(key=key).set_value(value)
        ok(at.run())
        current = replace(current, **change)
        assert yaml_of(at) == ex.recipe_of(current, GRID).to_yaml().rstrip(), key
        assert at.query_params == ex.to_query(current), key
        assert not at.error, (key, [e.value for e in at.error])
    at.text_input(key="ex_base").input(with_tiny.base + "/").run()  # another spelling
    assert ok(at).query_params["base"] == with_tiny.base + "/"
    # a combination the model cannot take: a clear error, the page stays up
    at.selectbox(key="ex_kd").set_value(2)
    assert "prune ratio to 0" in ok(at.run()).error[0].value
    # back on the grid: the stored result again
    at.query_params.clear()
    at.query_params.update(ex.to_query(with_tiny.dense))
    ok(at.run())
    assert "Stored result" in " ".join(m.value for m in at.markdown)
    assert len(at.get("image")) == 1  # the dense model itself


def test_query_parameters_reproduce_the_controls(with_tiny):
    c = replace(with_tiny.pruned, kd=1, kd_frac=0.3, lora=8, quant="w8a8", sampler="ams",
                steps=20, cache=2, train_steps=1234, method=ex.UNSTRUCTURED, ratio=0.6)
    at = ok(explore(ex.to_query(c)).run())
    state = at.session_state
    assert ex.Controls(**{k: state[f"ex_{k}"] for k in asdict(c)}) == c
    assert at.slider(key="ex_ratio").value == 0.6 and at.radio(key="ex_steps").value == 20
    assert at.number_input(key="ex_train_steps").value == 1234
    assert at.query_params == ex.to_query(c)
    assert not at.warning or all("URL parameter" not in w.value for w in at.warning)


def test_a_malformed_parameter_warns_names_it_and_falls_back(with_tiny):
    query = {**ex.to_query(with_tiny.pruned), "ratio": "lots", "steps": "7", "zoom": "2"}
    at = ok(explore(query).run())
    warnings = [w.value for w in at.warning if "URL parameter" in w.value]
    assert any("`ratio=lots`" in w and "using the default 0" in w for w in warnings)
    assert any("`steps=7`" in w for w in warnings) and any("`zoom`" in w for w in warnings)
    assert at.slider(key="ex_ratio").value == 0.0 and at.radio(key="ex_steps").value == 50
    assert at.query_params["ratio"] == "0" and "zoom" not in at.query_params
    assert at.title[0].value == "Explore"
    # the warning goes once the controls move on
    at.radio(key="ex_steps").set_value(5)
    assert not any("URL parameter" in w.value for w in ok(at.run()).warning)


def test_bad_base_shows_the_error_and_keeps_the_stores(with_tiny, tmp_path):
    before = sorted(p.name for p in with_tiny.store.iterdir())
    not_a_unet = tmp_path / "just-a-folder"
    not_a_unet.mkdir()
    for base, words in [(str(not_a_unet), "not a diffusers UNet folder"),
                        (str(tmp_path / "missing"), "neither an existing folder")]:
        at = ok(explore({"base": base, "ratio": "0.3"}).run())
        assert any(words in e.value for e in at.error), [e.value for e in at.error]
        assert not any(b.key == "ex_run" for b in at.button)
    assert sorted(p.name for p in with_tiny.store.iterdir()) == before


def test_open_in_compress_hands_over_the_stages_and_eval(with_tiny):
    c = replace(with_tiny.pruned, quant="w8a8", sampler="dpm-solver++", steps=10)
    at = ok(explore(ex.to_query(c)).run())
    at.button(key="ex_open").click()
    at.session_state["cp_yaml"] = True  # the student opens "Recipe (YAML)" there
    ok(at.run())
    assert at.title[0].value == "Compress"
    recipe = ex.recipe_of(c, GRID)
    assert [s["stage"] for s in at.session_state["cp_stages"]] == \
        ["structured-prune", "finetune", "quant-simulated"]
    assert at.session_state["_kept_cp_base"] == with_tiny.base
    assert at.number_input(key="cp_n").value == 16
    assert at.selectbox(key="cp_sampler").value == "dpm-solver++"
    assert at.number_input(key="cp_steps").value == 10
    assert next(c.value for c in at.code if "stages:" in c.value) == recipe.to_yaml().rstrip()


def test_a_result_your_run_just_made_says_so(with_tiny):
    """After a fresh run the stored result is that run's: not "nothing was run"."""
    from pages._shared import job_registry

    key = ex.recipe_of(with_tiny.pruned, GRID).key()
    job_id = job_registry().start(lambda progress: None, label="made here", key=key)
    assert job_registry().wait(job_id, 60)["state"] == "done"
    at = explore(ex.to_query(with_tiny.pruned))
    at.session_state["ex_job"] = job_id
    body = " ".join(m.value for m in ok(at.run()).markdown)
    assert "computed by your run just now, in 0.0 min" in body and "nothing was run" not in body


def test_run_submits_a_background_job_of_the_recipe(tiny, env, monkeypatch):
    shutil.copytree(tiny.store, env.runs)   # the run (cancelled) lands in a copy
    monkeypatch.setenv("LITEDIFF_RUNS", str(env.runs))
    c = replace(tiny.pruned, ratio=0.3)           # off the grid of the tiny store
    at = ok(explore(ex.to_query(c)).run())
    assert "Not run yet" in " ".join(i.value for i in at.info)
    assert until_estimate(at).value.startswith("≈ ")
    at.button(key="ex_run").click()
    ok(at.run())
    key = ex.recipe_of(c, GRID).key()
    job = next(j for j in jobs() if j["key"] == key)
    assert at.session_state["cp_job"] == job["id"] == at.session_state["ex_job"]
    from pages._shared import job_registry

    job_registry().cancel(job["id"])
    assert job_registry().wait(job["id"], 120)["state"] in ("cancelled", "done", "failed")
    assert sorted(p.name for p in tiny.store.iterdir() if not p.name.startswith("_")) == \
        sorted(tiny.ids)


def test_off_grid_shows_the_estimate_the_warning_and_neighbours(shipped):
    before = len(jobs())
    at = ok(explore({"ratio": "0.3", "train_steps": "300"}).run())
    assert "Not run yet" in " ".join(i.value for i in at.info)
    eta = until_estimate(at)
    assert eta.value.startswith("≈ ") and eta.value.endswith(" min")
    assert any("measured on this machine" in c.value for c in at.caption)
    warning = next(w.value for w in at.warning if "recovery training" in w.value)
    assert "stored runs of structured pruning at ratio 0.3 (l1)" in warning
    assert "400 training steps" in warning and "the dense model's" in warning
    assert "benchmarks/results.md" in warning
    near = [b for b in at.button if b.key.startswith("ex_near_")]
    assert near and near[0].label.startswith("structured l1 30% + FT 400")
    assert len(jobs()) == before  # the estimate starts nothing
    near[0].click()
    ok(at.run())  # the neighbour's controls: its stored result at once
    assert at.number_input(key="ex_train_steps").value == 400
    assert "Stored result" in " ".join(m.value for m in at.markdown)
    assert len(at.get("image")) == 2 and at.query_params["train_steps"] == "400"


def test_shipped_grid_settings_show_at_once(shipped):
    at = ok(explore({"ratio": "0.5", "method": "taylor"}).run())
    assert "Stored result" in " ".join(m.value for m in at.markdown)
    # 400 fine-tune steps do not recover it: the page says so and names a recovered run
    note = next(w.value for w in at.warning if w.value.startswith("Not recovered"))
    assert "400 training steps" in note and "Recovery page" in note
    for change in ({"ex_ratio": 0.7}, {"ex_method": "diff-pruning"}):
        (key, value), = change.items()
        widget = at.slider(key=key) if key == "ex_ratio" else at.selectbox(key=key)
        widget.set_value(value)
        t0 = time.perf_counter()
        ok(at.run())
        assert time.perf_counter() - t0 < 5
        assert "Stored result" in " ".join(m.value for m in at.markdown)
        assert len(at.get("image")) == 2 and len(at.get("plotly_chart")) == 2


def test_the_shipped_grid_is_in_cached_results():
    """Every setting of ``shipped_grid`` has a finished run in cached_results/ (made by
    ``benchmarks/explore_grid.py``), at the grid's evaluation, and each is one factor away
    from the defaults or a named Table 6 combination."""
    store = RunStore(CACHED)
    grid = ex.shipped_grid()
    assert len({c for _, c in grid}) == len(grid) > 30
    missing = [f"{why}: {ex.recipe_of(c, ex.GRID_EVAL).method()}" for why, c in grid
               if store.find(ex.recipe_of(c, ex.GRID_EVAL)) is None]
    assert not missing, f"run benchmarks/explore_grid.py: {missing}"
    for why, c in grid:
        run = store.load(store.find(ex.recipe_of(c, ex.GRID_EVAL)).name)
        assert run["status"]["status"] == "done" and run["result"].fidelity.fid is not None
        centres = (ex.Controls(), replace(ex.Controls(), ratio=0.3),
                   replace(ex.Controls(), ratio=0.3, kd=1),   # dense; 30 %; 30 % + KD (LoRA)
                   replace(ex.Controls(), train_steps=1600))  # fresh students: 1,600 steps
        apart = min(sum(getattr(c, f.name) != getattr(centre, f.name)
                        for f in fields(ex.Controls)) for centre in centres)
        assert why.startswith(("Table 6", "fewer steps with")) or apart <= 1, (why, c)
    for control in ("ratio", "method", "kd", "lora", "quant", "sampler", "steps", "cache"):
        shown = {getattr(c, control) for _, c in grid}
        assert shown >= set(ex.choices_of(control)), (control, shown)


def test_fewer_sampling_steps_are_compared_with_the_dense_reference(shipped):
    at = ok(explore({"steps": "10"}).run())
    body = " ".join(m.value for m in at.markdown)
    assert "Stored result" in body and "(the reference)" in body and "ddim 50 steps" in body
    assert len(at.get("image")) == 2  # the dense model at DDIM 50 | at DDIM 10
    per_image = next(m for m in at.metric if m.label == "Speed-up per image")
    assert float(per_image.value.rstrip("×")) > 3  # 10 steps instead of 50
