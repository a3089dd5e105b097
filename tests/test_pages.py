"""The dashboard pages (AppTest): each renders with an empty store and with two tiny real runs,
its widgets change what is shown, and a recipe runs (and cancels) through the job registry.

Tiny on purpose: a 28×28 UNet of ~0.2 M params, eval n=16 with 2 DDIM steps."""

import json
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from litediff_core.compress import STAGES, describe_stage
from litediff_core.device import cpu_info
from litediff_core.recipes import Recipe
from litediff_core.runs import RunStore, run_recipe
from tiny import save_tiny_base

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `pages._shared` lives next to app.py
    sys.path.insert(0, str(REPO))

APP = REPO / "app.py"
PAGES = ["compress", "samples", "layers", "pareto", "recovery", "runs"]
EVAL = {"n": 16, "steps": 2, "latency_batch": 2}

pytestmark = pytest.mark.usefixtures("fashion_mnist")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny base model and a store with two real runs (structured; unstructured + fine-tune)."""
    root = tmp_path_factory.mktemp("pages")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITEDIFF_CACHE", str(root / "cache"))
        base = save_tiny_base(root / "base")
        store = RunStore(root / "runs")
        a = run_recipe(Recipe(base=base, eval=EVAL, name="pruned by half", stages=[
            {"stage": "structured-prune", "config": {"ratio": 0.5, "importance": "l1"}}]),
            store, device="cpu")
        b = run_recipe(Recipe(base=base, eval=EVAL, name="sparse then tuned", stages=[
            {"stage": "unstructured-prune", "config": {"ratio": 0.5}},
            {"stage": "finetune", "config": {"steps": 2, "batch_size": 8, "curve_every": 1,
                                             "curve_samples": 50, "curve_sampling_steps": 2}}]),
            store, device="cpu")
    return SimpleNamespace(base=base, store=root / "runs", ids=[a.name, b.name])


@pytest.fixture
def with_runs(tiny, env, monkeypatch):
    """The two tiny runs as the user store (read only: tests that change it copy it)."""
    monkeypatch.setenv("LITEDIFF_RUNS", str(tiny.store))
    return tiny


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.switch_page(f"pages/{name}.py")
    return at.run()


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def infos(at):
    return " ".join(i.value for i in at.info)


def figures(at):
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def rows(at, index=0) -> int:
    return len(at.dataframe[index].value)


def wait_for(job_id: str, timeout: float = 120) -> dict:
    from pages._shared import job_registry

    return job_registry().wait(job_id, timeout)


# ----------------------------------------------------------------------------- every page

def test_every_page_renders_with_an_empty_store(env):
    for name in PAGES:
        at = ok(page(name))
        assert at.title[0].value
        if name != "compress":
            assert "No cached results yet" in infos(at)
            assert "regenerate" in infos(at)
            assert not at.get("plotly_chart") and not at.get("image")
    assert not env.runs.exists() or not any(env.runs.iterdir())


def test_every_page_renders_with_two_runs(with_runs):
    at = ok(page("samples"))
    assert len(at.get("image")) == 2  # both runs' samples.png side by side
    assert "ddim 2 steps" in at.get("image")[0].proto.imgs[0].caption  # the run's sampler
    at = ok(page("layers"))
    assert len(at.get("plotly_chart")) == 2  # heatmap, per block (A vs B once B is picked)
    at = ok(page("pareto"))
    names = {t.get("name") for t in figures(at)[0]["data"]}
    assert {"structured-prune(l1, 0.5) · ddim 2",  # the method names the run's own sampler
            "unstructured-prune(l1, 0.5) → finetune(2) · ddim 2", "Pareto frontier"} <= names
    at = ok(page("recovery"))
    fig = figures(at)[0]
    names = [t["name"] for t in fig["data"]]
    assert names[0] == "sparse then tuned (1-finetune)" and len(names) == 2
    assert names[1].startswith("dense base, same setup (")  # and its value
    assert fig["data"][0]["x"] == [0, 1, 2]  # step 0, every step, the end
    assert "FID of 50 samples, DPM-Solver++ 2 steps" in fig["layout"]["title"]["text"]
    assert fig["data"][1]["y"][0] == fig["data"][1]["y"][1]  # the dense base: a level line
    at = ok(page("runs"))
    assert rows(at) == 2
    ok(page("compress"))


def test_recovery_page_switches_axes_and_shows_unfinished_runs(with_runs, tmp_path,
                                                               monkeypatch):
    at = ok(page("recovery"))
    at.radio(key="rc_x").set_value("train_min").run()
    trace = figures(ok(at))[0]["data"][0]
    x = trace["x"]
    assert x[0] == 0 and x[1] > 0 and x == sorted(x)
    # minutes name their machine: in the hover and the table
    machine = cpu_info()["cpu"]
    assert trace["customdata"][0][2] == machine and "min on" in trace["hovertemplate"]
    assert at.dataframe[0].value["trained on"].tolist() == [machine]
    assert not at.warning  # one machine: minutes compare
    at.radio(key="rc_y").set_value("eps_mse_teacher").run()
    layout = figures(ok(at))[0]["layout"]
    assert "ε-MSE" in layout["yaxis"]["title"]["text"] and layout["yaxis"]["type"] == "log"
    at.checkbox(key="rc_log").uncheck().run()
    assert figures(ok(at))[0]["layout"]["yaxis"]["type"] == "linear"
    # a run stopped mid-training: its curve so far, read from the checkpoint
    store = tmp_path / "store"
    shutil.copytree(with_runs.store, store)
    run_id = with_runs.ids[1]
    log = [json.loads(line) for line in (store / run_id / "log.jsonl").read_text().splitlines()]
    entry = log[1]["log"]
    ckpt = store / "_checkpoints" / "abcdef123456" / "1-finetune"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({
        "format": 1, "step": 1, "fingerprint": {"stage": "finetune", "config": entry["config"],
                                                "steps": 2}, "curve": entry["curve"][:2],
        "curve_label": entry["curve_label"]}))
    (ckpt.parent / "recipe.json").write_text(json.dumps({"name": "still training",
                                                         "base": "x", "stages": []}))
    monkeypatch.setenv("LITEDIFF_RUNS", str(store))
    at = ok(page("recovery"))
    names = [t["name"] for t in figures(at)[0]["data"]]
    assert "still training (1-finetune) — unfinished at step 1 of 2" in names
    # curves trained on different machines: their minutes are said not to compare
    state = json.loads((ckpt / "state.json").read_text())
    state["curve"] = [{**p, "machine": "Another CPU"} for p in state["curve"]]
    (ckpt / "state.json").write_text(json.dumps(state))
    at = ok(page("recovery"))
    at.radio(key="rc_x").set_value("train_min").run()
    assert "do not compare directly" in ok(at).warning[0].value


def test_recovery_draws_one_dense_line_for_references_equal_as_shown(tiny, env):
    """Curves measured on two machines carry the dense reference with a 5th-digit difference:
    one labelled line, not two lines of the same name."""
    shutil.copytree(tiny.store, env.runs)
    shutil.copytree(tiny.store / tiny.ids[1], env.cached / tiny.ids[1])
    metrics = env.cached / tiny.ids[1] / "metrics.json"
    data = json.loads(metrics.read_text())
    for curve in data["recovery"]:
        curve["reference"]["fid"] *= 1 + 1e-5
    metrics.write_text(json.dumps(data))
    at = ok(page("recovery"))  # both curves are shown (the last four are, at first)
    traces = figures(ok(at))[0]["data"]
    dense = [t for t in traces if t["name"].startswith("dense base")]
    assert len(traces) == 3 and len(dense) == 1, [t["name"] for t in traces]


# ----------------------------------------------------------------------------- Pareto

def test_pareto_selects_change_the_figure_and_a_click_shows_the_run(with_runs):
    at = ok(page("pareto"))
    fig = figures(at)[0]
    assert fig["layout"]["xaxis"]["title"]["text"] == "Parameters (M)"
    assert "FID" in fig["layout"]["yaxis"]["title"]["text"]
    assert "FID on 16 samples" in fig["layout"]["title"]["text"]  # the FID setup on the figure
    assert any(t.get("error_y", {}).get("arrayminus") for t in fig["data"])  # FID interval
    at.selectbox(key="pa_x").select("macs").run()
    assert figures(ok(at))[0]["layout"]["xaxis"]["title"]["text"].startswith("MACs per image")
    at.selectbox(key="pa_y").select("ssim_to_base").run()
    fig = figures(ok(at))[0]
    assert "SSIM" in fig["layout"]["yaxis"]["title"]["text"]
    assert not any(t.get("error_y") for t in fig["data"])
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels == ["Download points (CSV)", "Download figure (interactive HTML)"]
    at.button(key="pa_png_make").click().run()
    if Path("/usr/bin/chromium").exists():  # kaleido renders through it
        assert at.session_state["pa_png_bytes"][1][:8] == b"\x89PNG\r\n\x1a\n"
        assert "Download figure (PNG)" in [d.proto.label for d in ok(at).get("download_button")], [(d.proto.label, d.proto.id) for d in at.get("download_button")]
    else:
        assert "PNG export needs" in ok(at).warning[0].value
    # a selected point shows that run and points to the Layers page
    ref = f"yours:{with_runs.ids[0]}"
    at.session_state["pa_chart"] = {"selection": {"points": [{"customdata": [ref]}]}}
    at.run()
    assert ok(at).subheader[0].value == "Selected: pruned by half"
    assert len(at.get("image")) == 1 and at.session_state["layers_focus"] == ref


def test_pareto_families_rings_hover_and_images_keep_colours(with_runs, monkeypatch):
    import io

    import numpy as np
    from PIL import Image

    from pages import _shared

    at = ok(page("pareto"))
    fig = figures(at)[0]
    points = {t["legendgroup"]: t for t in fig["data"] if t.get("mode") == "markers"
              and t.get("legendgroup") not in ("ring",)}
    structured, unstructured = points["structured"], points["unstructured"]
    assert structured["name"].startswith("structured-prune(l1, 0.5)")
    assert unstructured["name"].startswith("unstructured-prune(l1, 0.5) → finetune(2)")
    assert structured["legendgrouptitle"]["text"] == "structured pruning"
    assert structured["marker"]["color"] != unstructured["marker"]["color"]
    assert structured["marker"]["symbol"] != unstructured["marker"]["symbol"]
    hover = structured["customdata"][0][1]
    assert "pruned by half" in hover and " M params" in hover and "FID: " in hover
    assert re.search(r"FID: \d+(\.\d)? \[\d", hover) and "e+0" not in hover
    # what a point's recovery cost, in its hover: the fine-tuned run says it, the untrained not
    assert "recovery training" not in hover
    assert "recovery training: 2 steps" in unstructured["customdata"][0][1]
    ring = next(t for t in fig["data"] if t.get("legendgroup") == "ring")
    assert ring["name"] == "newest run" and ring["marker"]["symbol"] == "circle-open"
    newest = max(with_runs.ids, key=lambda i: json.loads(
        (with_runs.store / i / "status.json").read_text())["finished"])
    assert ring["customdata"][0][0] == f"yours:{newest}"
    frontier = next(t for t in fig["data"] if t["name"] == "Pareto frontier")
    assert frontier["text"] and any("Pareto frontier" in a["text"]
                                    for a in fig["layout"]["annotations"])
    # a selected point takes the ring
    other = next(i for i in with_runs.ids if i != newest)
    at.session_state["pa_chart"] = {"selection": {"points": [{"customdata": [f"yours:{other}"]}]}}
    ring = next(t for t in figures(ok(at.run()))[0]["data"] if t.get("legendgroup") == "ring")
    assert ring["name"] == "selected run" and ring["customdata"][0][0] == f"yours:{other}"
    # PNG and SVG keep the series' colours and the legend
    at.button(key="pa_png_make").click().run()
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("kaleido needs Chrome or Chromium for PNG/SVG")
    png = Image.open(io.BytesIO(at.session_state["pa_png_bytes"][1])).convert("RGB")
    pixels = np.asarray(png).reshape(-1, 3).astype(int)
    for trace in points.values():
        colour = trace["marker"]["color"]
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        close = (np.abs(pixels - rgb).max(axis=1) <= 2).sum()
        assert close >= 50, f"{trace['name']}: {colour} on {close} pixels of the PNG"
    svg = at.session_state["pa_svg_bytes"][1].decode()
    assert svg.lstrip().startswith("<svg") or "<svg" in svg[:500]
    assert "structured pruning" in svg and "Pareto frontier" in svg
    assert structured["marker"]["color"] in svg.lower() or \
        _rgb(structured["marker"]["color"]) in svg
    labels = [d.proto.label for d in ok(at).get("download_button")]
    assert "Download figure (PNG)" in labels and "Download figure (SVG)" in labels
    # per-image axes: offered only when the run table has them
    table = _shared.runs_table()
    for col in ("image_ms", "macs_total"):
        table[col] = [123.0, 4.5e9][: len(table)] + [None] * max(0, len(table) - 2)
    monkeypatch.setattr(_shared, "runs_table", lambda: table)
    options = ok(page("pareto")).selectbox(key="pa_x").options
    assert any("time per image" in o for o in options) and any("all UNet steps" in o
                                                               for o in options)
    monkeypatch.setattr(_shared, "runs_table",
                        lambda: table.drop(columns=["image_ms", "macs_total"]))
    options = ok(page("pareto")).selectbox(key="pa_x").options
    assert not any("time per image" in o or "all UNet steps" in o for o in options)


def _rgb(colour: str) -> str:
    return "rgb({}, {}, {})".format(*(int(colour[i:i + 2], 16) for i in (1, 3, 5)))


def test_pareto_starts_on_the_setup_with_most_samples(tiny, env):
    """Not the setup most runs share (the sweep's short pass): the one with the most samples,
    where the shipped recovered runs are evaluated."""
    shutil.rmtree(env.cached)
    shutil.copytree(tiny.store, env.cached)  # two cached runs, 16 samples each
    run_recipe(Recipe(base=tiny.base, eval={**EVAL, "n": 24}, name="more samples"),
               RunStore(env.cached), device="cpu")
    table = RunStore(env.cached).table().set_index("name")
    assert table.loc["more samples", "dense"] and table.loc["more samples", "n"] == 24
    assert not table["dense"].drop("more samples").any()
    setups = ok(page("pareto")).multiselect(key="pa_setups")
    assert len(setups.options) == 2 and [v.split(",")[0] for v in setups.value] == ["24 samples"]


def test_pareto_shows_the_largest_setup_and_your_newest(tiny, env):
    """Runs of two evaluation setups: the page starts on the one with most samples plus that of
    your newest run, with a warning when they differ; one setup alone has no warning."""
    shutil.rmtree(env.cached)
    shutil.copytree(tiny.store, env.cached)  # two cached runs, 16 samples each
    other = run_recipe(Recipe(base=tiny.base, eval={**EVAL, "n": 12}, name="other setup"),
                       RunStore(env.runs), device="cpu")
    at = ok(page("pareto"))
    setups = at.multiselect(key="pa_setups")
    assert len(setups.options) == 2 and len(setups.value) == 2
    assert "different evaluation setups" in at.warning[0].value
    assert "(3)" in next(c.value for c in at.caption if "One point per" in c.value)
    assert other.name in {p["ref"].split(":")[1] for p in _pareto_points(at)}
    common = next(v for v in setups.value if "16 samples" in v)
    setups.set_value([common]).run()
    assert not ok(at).warning
    assert "(2)" in next(c.value for c in at.caption if "One point per" in c.value)
    # another sampler at the same sample count is the same FID setup: one more point there
    fast = run_recipe(Recipe(base=tiny.base, eval={**EVAL, "sampler": "dpm-solver++"},
                             name="fewer steps"), RunStore(env.runs), device="cpu")
    at = ok(page("pareto"))
    setups = at.multiselect(key="pa_setups")
    assert len(setups.options) == 2
    assert fast.name in {p["ref"].split(":")[1] for p in _pareto_points(at)}


def test_pareto_overlays_reported_points_only_for_cifar10_runs(with_runs, monkeypatch):
    import pandas as pd

    from litediff_core import reported

    at = ok(page("pareto"))  # Fashion-MNIST runs: the papers' CIFAR-10 figures stay off
    assert any("Reported points are CIFAR-10 figures" in c.value for c in at.caption)
    assert "reported: Inception FID, other setup" not in [
        t.get("name") for t in figures(at)[0]["data"]]
    listed = pd.DataFrame([{"paper": "Test paper", "dataset": "cifar10", "method": "test method",
                            "metric": "fid", "value": "50.0", "params_m": "0.1",
                            "macs_g": "", "size_mb": "", "source_note": "test data"}])
    monkeypatch.setattr(reported, "reported_points", lambda: listed)
    monkeypatch.setattr(reported, "reported_mismatch", lambda datasets: "")  # as if CIFAR-10
    at = ok(page("pareto"))
    names = [t.get("name") for t in figures(at)[0]["data"]]
    assert "reported: Inception FID, other setup" not in names  # opt-in
    at.checkbox(key="pa_reported").check().run()
    trace = next(t for t in figures(ok(at))[0]["data"]
                 if t.get("name") == "reported: Inception FID, other setup")
    assert _values(trace["x"]) == [pytest.approx(0.1)] and _values(trace["y"]) == [50.0]


def _values(array) -> list:
    """A plotly array as a list (plotly 7 sends numbers as base64 typed arrays)."""
    import base64

    import numpy as np

    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def _pareto_points(at):
    return [{"ref": c[0]} for t in figures(at)[0]["data"] for c in t.get("customdata", [])]


def test_pareto_front_keeps_the_points_nothing_beats():
    import pandas as pd

    from litediff_core.pareto import pareto_front

    df = pd.DataFrame({"x": [1, 2, 3, 4, 2], "y": [10, 5, 6, 1, 7]})
    assert list(pareto_front(df, "x", "y")) == [True, True, False, True, False]
    assert list(pareto_front(df, "x", "y", higher_is_better=True)) == [True, False, False,
                                                                         False, False]


def test_samples_first_compare_dense_best_and_fastest_usable_at_one_setup():
    """Not whatever three runs come first: the dense base, the lowest FID and the fastest run
    that passes the gate (not a collapsed model), at the dense setup with the most samples."""
    import pandas as pd

    from litediff_core.pareto import showcase

    big, small = "1000 samples, ddim 50 steps", "200 samples, ddim 50 steps"
    df = pd.DataFrame([  # method, eval, fid, speed-up, gate
        ("base (dense)", small, 110, 1.0, True), ("broken", small, 1200, 3.5, False),
        ("fast bad", small, 500, 2.0, False), ("also dense small", small, 111, 1.1, True),
        ("base (dense)", big, 74.6, 0.95, True), ("collapsed", big, 179, 1.98, False),
        ("recovered 50 %", big, 125, 1.97, True), ("recovered 30 %", big, 71, 1.27, True),
        ("base (dense) · dpm-solver++ 20", "1000 samples, dpm-solver++ 20 steps", 41, 1, True),
        ("unfinished", big, None, None, None)],
        columns=["method", "eval", "fid", "speedup", "gate"]).assign(
        status="done", created=range(10))
    df["n"] = df["eval"].str.split(" ").str[0].astype(int)
    df["dense"] = df["method"].str.startswith("base (dense)")
    df.loc[9, "status"] = "running"
    assert list(df.loc[showcase(df), "method"]) == ["base (dense)", "recovered 30 %",
                                                    "recovered 50 %"]
    # nothing passes the gate: the fastest of all; no compressed run beside a dense: nothing
    df["gate"] = None
    assert list(df.loc[showcase(df), "method"])[2] == "collapsed"
    assert showcase(df[df["dense"]]).empty


# ----------------------------------------------------------------------------- Runs

def test_runs_filter_sort_compare_and_export(with_runs):
    at = ok(page("runs"))
    assert rows(at) == 2
    at.text_input(key="rn_filter").input("sparse").run()
    assert rows(ok(at)) == 1 and at.dataframe[0].value["name"].iloc[0] == "sparse then tuned"
    at.text_input(key="rn_filter").input("no such run").run()
    assert rows(ok(at)) == 0
    at.text_input(key="rn_filter").input("").run()
    at.selectbox(key="rn_sort").select("params").run()
    at.toggle(key="rn_asc").set_value(True).run()
    shown = ok(at).dataframe[0].value
    assert list(shown["params"]) == sorted(shown["params"])
    compare = at.dataframe[1].value.set_index("metric")
    assert compare.loc["params", "B − A"]
    assert compare.loc["eval", "A"] == "16 samples, ddim 2 steps"
    labels = {d.proto.label for d in at.get("download_button")}
    assert {"CSV", "Markdown", "LaTeX"} <= labels
    assert any(label.startswith("Download model/ as zip") for label in labels)


def test_runs_exports_formatted_slide_tables(with_runs):
    at = ok(page("runs"))
    radio = at.radio(key="rn_export_cols")
    assert radio.value == "slide"

    def preview():
        return next(m.value for m in at.markdown if m.value.lstrip().startswith("|")
                    and "params (M)" in m.value)

    with pytest.raises(StopIteration):
        preview()  # drawn once the student opens it
    at.session_state["rn_preview"] = True
    ok(at.run())
    head = preview().splitlines()[0]
    for column in ("params (M)", "size (MiB)", "MACs (M)", "speed-up per step",
                   "FID [95% CI]", "SSIM to base"):
        assert column in head
    assert "step latency" not in head and "e+0" not in preview()
    assert re.search(r"\| +\d+\.\d+ \[\d+\.\d, \d+\.\d\] \|", preview())  # FID [lo, hi]
    radio.set_value("all").run()
    assert "step latency (ms)" in preview().splitlines()[0] and "e+0" not in preview()
    labels = [d.proto.label for d in ok(at).get("download_button")]
    assert {"CSV", "Markdown", "LaTeX", "LaTeX document"} <= set(labels)


def test_zip_folder_keeps_paths_relative_to_the_folder_parent(tmp_path):
    from litediff_core.fileio import zip_folder

    (tmp_path / "model" / "unet").mkdir(parents=True)
    (tmp_path / "model" / "unet" / "config.json").write_text("{}")
    names = zipfile.ZipFile(__import__("io").BytesIO(zip_folder(tmp_path / "model"))).namelist()
    assert names == ["model/unet/config.json"]


def test_runs_delete_asks_first_and_cached_runs_are_read_only(tiny, env):
    shutil.copytree(tiny.store, env.runs)
    shutil.copytree(tiny.store / tiny.ids[1], env.cached / tiny.ids[1])
    at = ok(page("runs"))
    assert rows(at) == 3 and "No cached results" not in infos(at)
    own = at.selectbox(key="rn_del_pick")
    assert all(o.endswith("(yours, done)") for o in own.options) and len(own.options) == 2
    own.select(f"yours:{tiny.ids[0]}").run()
    at.button(key="rn_del").click().run()
    assert "for good" in ok(at).warning[0].value
    assert (env.runs / tiny.ids[0]).exists()
    at.button(key="rn_del_no").click().run()
    assert (env.runs / tiny.ids[0]).exists() and not ok(at).warning
    at.button(key="rn_del").click().run()
    at.button(key="rn_del_yes").click().run()
    assert not (env.runs / tiny.ids[0]).exists()
    assert (env.runs / tiny.ids[1]).exists() and (env.cached / tiny.ids[1]).exists()
    assert f"Deleted run {tiny.ids[0]}" in ok(at).success[0].value
    assert rows(at) == 2


# ----------------------------------------------------------------------------- Layers

def test_layers_heatmap_blocks_and_difference(with_runs):
    at = ok(page("layers"))
    heat, blocks = figures(at)  # the difference to another run is drawn once one is picked
    assert "layers differ" not in " ".join(c.value for c in at.caption)
    at = ok(at.selectbox(key="ly_other").select(f"yours:{with_runs.ids[1]}").run())
    heat, blocks, diff = figures(at)
    # the structured run changed channels only: one row, named layers on the axis
    assert heat["data"][0]["type"] == "heatmap" and len(heat["data"][0]["z"]) == 1
    assert heat["data"][0]["y"] == ["channels kept (after / before)"]
    assert "1×28×28 image per UNet step" in heat["layout"]["title"]["text"]
    kept = [v for v in heat["data"][0]["z"][0] if v is not None]
    assert kept and min(kept) < 1.0  # the structured run removed channels
    x = list(heat["data"][0]["x"])
    assert "down0.res0.conv1" in x and "conv_in" in x and x.index("conv_in") < x.index(
        "down0.res0.conv1") < x.index("mid.res0.conv1") < x.index("conv_out")  # forward order
    full = [c[0] for c in heat["data"][0]["customdata"][0]]
    assert full[x.index("down0.res0.conv1")] == "down_blocks.0.resnets.0.conv1"  # on hover
    assert {"down0", "mid", "up1"} <= {re.sub("<[^>]+>", "", a["text"])
                                       for a in heat["layout"]["annotations"]}
    assert {t["name"] for t in blocks["data"]} == {"before", "after"}
    assert "down_blocks.0" in blocks["data"][0]["x"]
    assert "layers differ" in " ".join(c.value for c in at.caption)
    at.selectbox(key="ly_run").select(f"yours:{with_runs.ids[1]}").run()
    heat = figures(ok(at))[0]
    assert heat["data"][0]["y"] == ["sparsity (fraction of zero weights)"]  # unstructured
    sparsity = [v for v in heat["data"][0]["z"][0] if v is not None]
    assert max(sparsity) > 0.3  # the unstructured run zeroed weights
    per_layer = [d for d in at.dataframe if "sparsity_after" in d.value.columns]
    assert [e.label for e in at.expander] == ["Per-layer table"] and not per_layer  # on request
    at.session_state["ly_table"] = True  # the student opens it
    per_layer = [d.value for d in ok(at.run()).dataframe if "sparsity_after" in d.value.columns]
    assert len(per_layer) == 1 and "down_blocks.0.resnets.0.conv1" in set(per_layer[0]["name"])


def test_layers_block_summary_and_a_run_that_changed_nothing(tiny, env):
    shutil.copytree(tiny.store, env.runs)
    dense = run_recipe(Recipe(base=tiny.base, eval=EVAL, name="dense"), RunStore(env.runs),
                       device="cpu")
    for run_id in tiny.ids:  # as shipped runs: no weights kept, the shape comes from the base
        shutil.rmtree(env.runs / run_id / "model")
    at = ok(page("layers"))  # the structured run: which run opens first depends on folder mtimes
    at = ok(at.selectbox(key="ly_run").select(f"yours:{tiny.ids[0]}").run())
    assert "1×28×28 image per UNet step" in figures(at)[0]["layout"]["title"]["text"]
    summary = _block_summary(at).set_index("block")
    blocks = list(summary.index)
    assert blocks[0] == "conv_in" and blocks[-1] == "conv_out"
    assert "time_embedding" in blocks and "mid_block" in blocks  # top-level, not split
    assert {"down_blocks.0", "down_blocks.1", "up_blocks.0", "up_blocks.1"} <= set(blocks)
    row = summary.loc["down_blocks.0"]
    count = r"\d+(\.\d+)?( [kMG])?"
    assert re.fullmatch(f"{count} → {count}", row["params before → after"])
    assert re.fullmatch(f"{count} → {count}", row["MACs before → after"])
    assert row["params change"].startswith("-") and row["MACs change"].endswith("%")
    assert summary.loc["time_embedding", "params change"] == "+0%"  # protected by default
    bars = [t for f in figures(at) for t in f["data"] if t["type"] == "bar"]
    colours = {}  # each legend entry (before / after) one colour in both panels
    for t in bars:
        colours.setdefault(t["legendgroup"], set()).add(t["marker"]["color"])
    assert set(colours) == {"before", "after"} and all(len(c) == 1 for c in colours.values())
    assert colours["before"] != colours["after"]
    at.selectbox(key="ly_run").select(f"yours:{dense.name}").run()
    assert "changed no layer" in infos(ok(at)) and "it has no compression stage" in infos(at)
    assert not at.get("plotly_chart") or "heatmap" not in {
        t["type"] for f in figures(at) for t in f["data"]}
    assert set(_block_summary(at)["params change"]) == {"+0%"}


def _block_summary(at):
    return next(t.value for t in at.table if "params before → after" in t.value.columns)


def test_layer_names_order_and_factorised_layers():
    import pandas as pd

    from litediff_core import layer_names as ln

    assert ln.short_layer_name("down_blocks.1.resnets.0.conv1") == "down1.res0.conv1"
    assert ln.short_layer_name("up_blocks.0.upsamplers.0.conv") == "up0.upsample.conv"
    assert ln.short_layer_name("mid_block.attentions.0.to_out.0") == "mid.attn0.to_out"
    assert ln.block_of("time_embedding.linear_1") == "time_embedding"
    assert ln.block_of("down_blocks.2.attentions.0.to_q") == "down_blocks.2"
    names = ["conv_out", "up_blocks.0.resnets.0.conv1", "down_blocks.0.downsamplers.0.conv",
             "down_blocks.0.resnets.1.conv1", "down_blocks.0.attentions.0.to_q",
             "down_blocks.0.resnets.0.conv2", "down_blocks.0.resnets.0.conv1", "mid_block.x",
             "conv_in"]
    assert sorted(names, key=ln.layer_order) == [
        "conv_in", "down_blocks.0.resnets.0.conv1", "down_blocks.0.resnets.0.conv2",
        "down_blocks.0.attentions.0.to_q", "down_blocks.0.resnets.1.conv1",
        "down_blocks.0.downsamplers.0.conv", "mid_block.x", "up_blocks.0.resnets.0.conv1",
        "conv_out"]
    # low rank: conv → conv.0 + conv.1 (rows after only); the layer takes their sum
    layers = pd.DataFrame([
        {"name": "a.conv", "type": "Conv2d", "params_before": 1000, "params_after": None,
         "channels_before": 32, "channels_after": None, "sparsity_after": None},
        {"name": "a.conv.0", "type": "Conv2d", "params_before": None, "params_after": 300,
         "channels_before": None, "channels_after": 8, "sparsity_after": 0.0},
        {"name": "a.conv.1", "type": "Conv2d", "params_before": None, "params_after": 200,
         "channels_before": None, "channels_after": 32, "sparsity_after": 0.0},
        {"name": "b", "type": "Conv2d", "params_before": 10, "params_after": 10,
         "channels_before": 4, "channels_after": 4, "sparsity_after": 0.0}])
    changes = ln.layer_changes(layers)
    assert list(changes["name"]) == ["a.conv", "b"]
    assert changes.loc[0, "params_kept"] == 0.5 and changes.loc[0, "channels_kept"] == 1.0
    assert ln.changed_rows(changes) == ["params_kept"]


def test_layers_opens_on_a_compressed_run(tiny, env):
    import os

    shutil.copytree(tiny.store, env.runs)
    dense = run_recipe(Recipe(base=tiny.base, eval=EVAL, name="dense"), RunStore(env.runs),
                       device="cpu")
    os.utime(dense, (1, 1))  # the oldest run: listed first
    at = ok(page("layers"))
    box = at.selectbox(key="ly_run")
    assert box.options[0].startswith("dense") and box.value == f"yours:{tiny.ids[0]}"


# ----------------------------------------------------------------------------- Samples

def test_samples_sampler_grid_is_timed_and_downloadable(with_runs):
    at = ok(page("samples"))
    at.text_input(key="sm_base").input(with_runs.base)
    at.multiselect(key="sm_samplers").set_value(["ddim", "dpm-solver++"])
    at.text_input(key="sm_steps").input("1, 2")
    at.number_input(key="sm_n").set_value(2)
    at.button(key="sm_go").click().run()
    ok(at)
    cells = at.get("image")[2:]
    assert len(at.get("image")) == 2 + 4
    captions = " ".join(i.caption for c in cells for i in c.proto.imgs)
    assert "ddim, 1 steps" in captions and "dpm-solver++, 2 steps" in captions
    assert captions.count("s wall") == 4
    # each cell's quality figure is confidence × class coverage of exactly that cell's images
    import re

    from litediff_core.evaluate import grid_quality
    from litediff_core.models import load_base
    from litediff_core.samplers import generate

    shown = re.findall(r"ddim, 2 steps — [^;]*; quality (\d\.\d\d) \(#\d of 4\) = "
                       r"confidence (\d\.\d\d) × classes (\d+\.\d)/10", captions)
    tiny = load_base(with_runs.base)
    images = generate(tiny.unet, dict(tiny.scheduler.config), sampler="ddim", steps=2, n=2,
                      seed=0, device="cpu")
    q = grid_quality(images)
    assert shown == [(f"{q['score']:.2f}", f"{q['confidence']:.2f}", f"{q['coverage'] * 10:.1f}")]
    assert [d.proto.label for d in at.get("download_button")] == [
        "Download PNG (one row per cell)"]
    # a stored run's model, and bad input that leaves the page up
    at.selectbox(key="sm_model").select(f"yours:{with_runs.ids[0]}")
    at.multiselect(key="sm_samplers").set_value(["ddim"])
    at.text_input(key="sm_steps").input("2")
    at.button(key="sm_go").click().run()
    assert len(ok(at).get("image")) == 2 + 1 and not at.error
    at.text_input(key="sm_steps").input("two")
    at.button(key="sm_go").click().run()
    assert "whole numbers" in ok(at).error[0].value


# ----------------------------------------------------------------------------- Compress

def test_compress_widgets_come_from_describe_stage(tiny, env):
    at = ok(page("compress"))
    at.text_input(key="cp_base").input(tiny.base).run()
    for name in STAGES:
        at.selectbox(key="cp_add_choice").select(name)
        at.button(key="cp_add").click().run()
    ok(at)
    specs = at.session_state["cp_stages"]
    assert [s["stage"] for s in specs] == list(STAGES)
    kinds = {"slider": at.slider, "number_input": at.number_input, "checkbox": at.checkbox,
             "selectbox": at.selectbox, "multiselect": at.multiselect}
    for spec in specs:
        for opt in describe_stage(spec["stage"]):
            key = f"cp_{spec['uid']}_{opt['name']}"
            if opt["type"] == "bool":
                kind = "checkbox"
            elif opt["type"] == "list[str]":
                kind = "multiselect"
            elif opt["choices"]:
                kind = "selectbox"
            elif opt["widget"] == "slider":  # declared by the stage, with both bounds
                kind = "slider"
            else:
                kind = "number_input"
            widget = kinds[kind](key=key)
            if opt["choices"] and kind in ("selectbox", "multiselect"):
                assert list(widget.options) == opt["choices"]
            if kind == "number_input":  # closed declared bounds become the input's limits
                assert widget.min == (opt["low"] if opt["low"] is not None
                                      and not opt["open_low"] else None), (key, widget.min)
                assert widget.max == (opt["high"] if opt["high"] is not None
                                      and not opt["open_high"] else None), (key, widget.max)
            if kind == "slider":
                assert widget.min >= opt["low"] and widget.max <= opt["high"]
            assert widget.value == (opt["default"] if kind != "multiselect"
                                    else list(opt["default"]))
    # remove and reorder
    first, second = specs[0]["uid"], specs[1]["uid"]
    at.button(key=f"cp_down_{first}").click().run()
    assert [s["uid"] for s in at.session_state["cp_stages"][:2]] == [second, first]
    at.button(key=f"cp_rm_{first}").click().run()
    assert first not in [s["uid"] for s in ok(at).session_state["cp_stages"]]
    at.button(key="cp_clear").click().run()
    assert ok(at).session_state["cp_stages"] == []


def test_compress_preset_prediction_and_bad_inputs(tiny, env, tmp_path):
    at = ok(page("compress"))
    at.text_input(key="cp_base").input(tiny.base).run()
    at.button(key="cp_preset_litediffusion-prune-ft").click().run()
    assert [s["stage"] for s in ok(at).session_state["cp_stages"]] == ["structured-prune",
                                                                       "finetune"]
    assert at.text_input(key="cp_name").value.startswith("litediffusion-prune-ft")
    predicted = {m.label: m for m in at.metric}
    assert "Predicted parameters" in predicted and "vs base" in predicted[
        "Predicted parameters"].delta
    assert any("predicted" in c.value.lower() for c in at.caption)
    uid = at.session_state["cp_stages"][0]["uid"]
    at.slider(key=f"cp_{uid}_ratio").set_value(0.95).run()
    assert "would remove all" in ok(at).error[0].value  # no channels left: explained
    # the form survives a visit to another page
    at.switch_page("pages/runs.py").run()
    at.switch_page("pages/compress.py").run()
    assert ok(at).text_input(key="cp_base").value == tiny.base
    assert at.slider(key=f"cp_{uid}_ratio").value == 0.95
    for bad, words in (("no/such-model-offline", "local folder"),
                       (str(tmp_path), "not a diffusers UNet folder")):
        at.text_input(key="cp_base").input(bad).run()
        assert words in ok(at).error[0].value
        assert at.button(key="cp_run").disabled


def _tiny_compress_page(tiny, stages):
    at = ok(page("compress"))
    at.text_input(key="cp_base").input(tiny.base)
    at.selectbox(key="cp_device").select("cpu")
    at.number_input(key="cp_n").set_value(EVAL["n"])
    at.number_input(key="cp_steps").set_value(EVAL["steps"])
    at.number_input(key="cp_lat_batch").set_value(EVAL["latency_batch"]).run()
    for stage, config in stages:
        at.selectbox(key="cp_add_choice").select(stage)
        at.button(key="cp_add").click().run()
        uid = at.session_state["cp_stages"][-1]["uid"]
        for option, value in config.items():
            widget = next(w for k in ("slider", "number_input", "selectbox")
                          for w in getattr(at, k) if w.key == f"cp_{uid}_{option}")
            widget.set_value(value).run()
    return ok(at)


def test_compress_runs_a_recipe_as_a_background_job(tiny, env):
    at = _tiny_compress_page(tiny, [("structured-prune", {"ratio": 0.5})])
    at.button(key="cp_run").click().run()
    job_id = at.session_state["cp_job"]
    assert ok(at).get("progress")  # the live panel
    snap = wait_for(job_id)
    assert snap["state"] == "done", snap["error"]
    at.run()  # run_every never fires in AppTest: rerun by hand
    assert "Done in" in ok(at).success[0].value
    shown = {m.label: m.value for m in at.metric}
    table = RunStore(env.runs).table()
    assert list(table["status"]) == ["done"]
    assert shown["Parameters"] == f"{table.loc[0, 'params'] / 1e6:.3f} M"
    assert len(at.get("image")) == 1
    runs = ok(page("runs"))
    assert rows(runs) == 1 and runs.dataframe[0].value["id"].iloc[0] == table.loc[0, "id"]


def test_compress_cancel_stops_the_job_and_keeps_the_store_consistent(tiny, env):
    from pages._shared import job_registry

    at = _tiny_compress_page(tiny, [("finetune", {"steps": 100_000, "batch_size": 4})])
    at.button(key="cp_run").click().run()
    job_id = at.session_state["cp_job"]
    try:
        deadline = time.time() + 120
        while not job_registry().snapshot(job_id)["losses"] and time.time() < deadline:
            time.sleep(0.1)
        at.run()
        ok(at)
        assert at.get("vega_lite_chart")  # the live loss curve
        assert any("ETA" in c.value for c in at.caption)
        at.button(key=f"cp_cancel_{job_id}").click().run()
        assert wait_for(job_id, 60)["state"] == "cancelled"
    finally:
        job_registry().cancel(job_id)
    at.run()
    assert "Cancelled" in ok(at).warning[0].value
    table = RunStore(env.runs).table()
    assert list(table["status"]) == ["failed"] and table.loc[0, "error"].startswith("Cancelled")


def test_compress_cancel_shows_cancelling_at_once(env):
    """Cancel is honest at once: while the job has not reached its next progress report (a long
    step), the page says "Cancelling…" (warning, progress text, disabled button), then
    "Cancelled" once the worker stopped."""
    import threading

    from pages._shared import job_registry

    started, release = threading.Event(), threading.Event()

    def quiet(progress):
        progress(1, 10, "finetune: loss 0.5")
        started.set()
        release.wait(60)  # a long step that reports nothing
        progress(2, 10, "finetune: loss 0.4")

    job_id = job_registry().start(quiet, label="quiet run")
    try:
        assert started.wait(60)
        at = AppTest.from_file(str(APP), default_timeout=180)
        at.session_state["cp_job"] = job_id
        at.switch_page("pages/compress.py")
        ok(at.run())
        button = at.button(key=f"cp_cancel_{job_id}")
        assert button.label == "Cancel" and not button.disabled
        assert not any("Cancelling" in w.value for w in at.warning)
        button.click().run()
        assert job_registry().snapshot(job_id)["state"] == "running"  # still in its step
        assert "Cancelling…" in ok(at).warning[0].value
        assert at.get("progress")[0].proto.text.startswith("Cancelling…")
        button = at.button(key=f"cp_cancel_{job_id}")
        assert button.label == "Cancelling…" and button.disabled
        assert any("stopping at the next progress report" in c.value for c in at.caption)
    finally:
        job_registry().cancel(job_id)
        release.set()
    assert wait_for(job_id, 60)["state"] == "cancelled"
    at.run()
    assert "Cancelled" in ok(at).warning[0].value
    assert not any("Cancelling" in w.value for w in at.warning)
