"""Explore: a few controls define ONE compression recipe (``litediff_core.explore``). If that
recipe was run before (the shipped ``cached_results/`` or your run store) its result shows at
once; otherwise the nearest stored runs, a training-budget warning, a time estimate and Run.

Thin by design: the mapping controls → recipe, the URL parameters, the neighbours, the warning
and the estimate are ``litediff_core.explore`` functions; this page draws them. Files are read
through ``st.cache_data`` keyed by the stores' and run folders' modification times.
"""

import json
from dataclasses import asdict, fields
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from litediff_core import explore as ex
from litediff_core import layer_names
from litediff_core.errors import LiteDiffError
from litediff_core.recipes import SAMPLER_NAMES, Recipe
from litediff_core.results import Fidelity, Latency, RunResult, Size
from litediff_core.runs import RunStore
from pages import _shared as ui


# ----------------------------------------------------------------------------- cached readers

def _mtime(path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def _stores() -> tuple:
    return tuple((label, str(store.root)) for label, store in ui.stores())


@st.cache_data(show_spinner="Reading the run stores…", max_entries=8)
def stored_runs(roots: tuple, stamps: tuple) -> list:
    """Every run of the stores ``roots`` ((label, folder), …) with its table row, recipe and
    the Explore controls that give it (None if they cannot). ``stamps``: the folders' mtimes
    (a run added, renamed into place or deleted changes them)."""
    out = []
    for label, root in roots:
        store = RunStore(root)
        records = store.records()  # each run read once
        for row, (_, run, status) in zip(store.table(records).to_dict("records"), records):
            if row["id"].startswith("."):
                continue
            recipe = run["recipe"]
            controls = ex.controls_of(recipe)
            row = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in row.items()}
            took = (status["finished"] - status["started"]
                    if isinstance(status.get("finished"), (int, float))
                    and isinstance(status.get("started"), (int, float)) else None)
            out.append({"ref": f"{label}:{row['id']}", "store": label, "id": row["id"],
                        "path": str(Path(root) / row["id"]), "recipe": recipe, "row": row,
                        "status": row["status"], "fid": row["fid"], "seconds": took,
                        "controls": asdict(controls) if controls else None})
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def run_files(path: str, stamp: float) -> dict:
    """A run folder's results (a ``RunResult``), sample grid (PNG bytes) and per-layer
    changes."""
    folder = Path(path)
    try:
        result = RunResult.from_dict(json.loads((folder / "metrics.json").read_text()))
    except (OSError, ValueError, LiteDiffError):  # none, unreadable, or of a newer schema
        result = RunResult()
    grid = folder / "samples.png"
    changes, rows = None, []
    try:
        changes = layer_names.layer_changes(pd.read_csv(folder / "layers.csv"))
        rows = layer_names.changed_rows(changes)
    except (OSError, ValueError, KeyError):
        changes = None
    return {"result": result, "grid": grid.read_bytes() if grid.exists() else None,
            "changes": changes, "rows": rows}


@st.cache_resource(show_spinner=False)
def rates_of(source: str, device: str) -> dict:
    """Throughput of the base model on this machine (``litediff_core.explore.measure_rates``),
    measured once per server in a worker thread so that the page never waits for it:
    ``{"rates": dict or None while measuring, "error": str or None}``."""
    import threading

    unet = ui.load_model(source).unet  # the cached model (measure_rates times a copy)
    holder = {"rates": None, "error": None}

    def work():
        try:
            holder["rates"] = ex.measure_rates(unet, device=device)
        except Exception as e:  # noqa: BLE001 — shown on the page instead of an estimate
            holder["error"] = f"{type(e).__name__}: {e}"

    threading.Thread(target=work, name="litediff-explore-rates", daemon=True).start()
    return holder


def runs_now() -> list:
    roots = _stores()
    return stored_runs(roots, tuple(_mtime(root) for _, root in roots))


@st.cache_data(show_spinner=False, max_entries=32)
def _grid_for(roots: tuple, stamps: tuple, base: str) -> dict:
    return ex.grid_eval([r["recipe"] for r in stored_runs(roots, stamps)], base)


def grid_for(base: str) -> dict:
    """The evaluation setup of the stored runs of ``base`` (what new recipes are evaluated
    with, so that they are comparable and grid settings find them)."""
    roots = _stores()
    return _grid_for(roots, tuple(_mtime(root) for _, root in roots), base)


def lookup(runs: list, recipe) -> dict:
    """The finished stored run of ``recipe`` (your store first), or None."""
    run_id = recipe.key()[:12]
    found = [r for r in runs if r["id"] == run_id and r["status"] == "done"]
    found.sort(key=lambda r: r["store"] != "yours")
    return found[0] if found else None


# ----------------------------------------------------------------------------- controls state

def _key(name: str) -> str:
    return f"ex_{name}"


def _names() -> list:
    return [f.name for f in fields(ex.Controls)]


def _set_widgets(controls: ex.Controls) -> None:
    for name in _names():
        st.session_state[_key(name)] = getattr(controls, name)


def apply_controls(values: dict) -> None:
    """Button callback: set every control (a neighbour's settings, the dense reference)."""
    _set_widgets(ex.Controls(**values))


def _as_key(query: dict) -> tuple:
    return tuple(sorted((str(k), str(v)) for k, v in query.items()))


def sync_from_url() -> None:
    """Before the widgets: a link (URL query parameters this session did not write) sets the
    controls, with a warning per malformed parameter; a return visit restores the last ones.
    A rerun asked for while an earlier run was still writing the URL carries the URL of before:
    every URL this session wrote or read is remembered, so such a stale one changes nothing."""
    state = st.session_state
    query = st.query_params.to_dict()
    seen = state.setdefault("_ex_urls", set())
    if query and _as_key(query) not in seen:
        seen.add(_as_key(query))
        controls, warnings = ex.from_query(query, start=ex.Controls(
            base=state.get("_kept_cp_base", "embedded")))
        _set_widgets(controls)
        state["_ex_warn"] = {"controls": controls, "warnings": warnings}
    elif any(_key(name) not in state for name in _names()):
        _set_widgets(state.get("_kept_ex")
                     or ex.Controls(base=state.get("_kept_cp_base", "embedded")))


def write_url(controls: ex.Controls) -> None:
    query = ex.to_query(controls)
    if st.query_params.to_dict() != query:
        st.query_params.from_dict(query)
    st.session_state.setdefault("_ex_urls", set()).add(_as_key(query))
    st.session_state["_kept_ex"] = controls


def control_panel() -> ex.Controls:
    from litediff_core.compress import describe_stage

    kd_help = next(o["help"] for o in describe_stage("distill") if o["name"] == "kd_frac")
    base = st.text_input("Base model", key=_key("base"),
                         help="embedded, a local diffusers folder, or a hub id")
    with st.container(border=True):
        st.markdown("**Compression**")
        ratio = round(float(st.slider(
            "Prune ratio", 0.0, max(ex.RATIOS), step=0.1, format="%.1f", key=_key("ratio"),
            help="fraction of channels (structured) or weights (unstructured) removed from "
                 "each layer; 0 = no pruning")), 1)
        method = st.selectbox("Pruning method", ex.methods(), format_func=ex.method_label,
                              key=_key("method"), disabled=not ratio,
                              help="structured: how channels are ranked (structured-prune "
                                   "importance); unstructured: zero the smallest weights (L1)")
        kd = st.selectbox("Knowledge distillation", [0, *ex.kd_scales()],
                          format_func=ex.kd_label, key=_key("kd"),
                          help="learn from the dense model's noise predictions (distill "
                               "stage); s=2/4: a fresh, smaller student")
        kd_frac = round(float(st.slider("KD weight (kd_frac)", 0.0, 1.0, step=0.1,
                                        format="%.1f", key=_key("kd_frac"), disabled=not kd,
                                        help=kd_help)), 1)
        lora = st.selectbox("LoRA rank", [0, *ex.LORA_RANKS], format_func=ex.lora_label,
                            key=_key("lora"),
                            help="train low-rank adapters (then merged) instead of all weights")
        quant = st.selectbox("Quantization", list(ex.QUANT), format_func=ex.QUANT_LABELS.get,
                             key=_key("quant"),
                             help="int8: real int8 kernels through ONNX Runtime (smaller, "
                                  "faster on CPU). W8A8 / W4A8: simulated (fake-quantized "
                                  "fp32: shows the quality cost, no speed or memory gain)")
    with st.container(border=True):
        st.markdown("**Sampling**")
        sampler = st.selectbox("Sampler", list(SAMPLER_NAMES), key=_key("sampler"))
        steps = st.radio("Sampling steps", list(ex.STEPS), horizontal=True, key=_key("steps"))
        cache = st.radio("Feature caching (DeepCache)", [0, *ex.CACHE_INTERVALS],
                         format_func=ex.cache_label, horizontal=True, key=_key("cache"),
                         help="run the whole UNet only every N steps and reuse its deep "
                              "features in between")
    partial = ex.Controls(base=base, ratio=ratio, kd=kd, lora=lora)
    train_steps = int(st.number_input(
        "Training steps", 1, ex.TRAIN_STEPS_MAX, step=100, key=_key("train_steps"),
        disabled=not ex.trains(partial),
        help="recovery training: fine-tune after pruning (KD off), distillation (KD on), or "
             "the LoRA adapters"))
    st.caption(_training_note(partial, train_steps))
    return ex.Controls(base=base, ratio=ratio, method=method, kd=kd, kd_frac=kd_frac,
                       lora=lora, quant=quant, sampler=sampler, steps=int(steps),
                       cache=int(cache), train_steps=train_steps)


def _training_note(c: ex.Controls, steps: int) -> str:
    if not ex.trains(c):
        return "No training: nothing is pruned or distilled."
    what = ("LoRA adapters" if c.lora else "distillation" if c.kd else "fine-tune after pruning")
    return f"{steps:,} steps of {what}."


# ----------------------------------------------------------------------------- recipe box

def open_in_compress(recipe) -> None:
    """Put the recipe into the Compress page's state (its stage list and kept form values)."""
    state = st.session_state
    uid = int(state.get("cp_uid", 0))
    stages = []
    for spec in recipe.stages:
        uid += 1
        stages.append({"uid": uid, "stage": spec["stage"], "config": dict(spec["config"])})
    state["cp_uid"], state["cp_stages"] = uid, stages
    ev = recipe.eval
    for key, value in (("base", recipe.base), ("dataset", recipe.dataset or ""),
                       ("seed", recipe.seed), ("name", ""), ("n", ev["n"]),
                       ("sampler", ev["sampler"]), ("steps", ev["steps"]), ("eta", ev["eta"]),
                       ("lat_batch", ev["latency_batch"])):
        state[f"_kept_cp_{key}"] = value
        state.pop(f"cp_{key}", None)


def recipe_box(recipe) -> None:
    box = st.expander("Recipe (YAML)", key="ex_yaml", on_change="rerun")
    if box.open:  # drawn when opened (the code highlighter is one more script to load)
        box.code(recipe.to_yaml(), language="yaml")
        box.caption(f"`{recipe.method()}` · key `{recipe.key()[:12]}` · evaluated with "
                    f"{recipe.eval['n']} samples (latency batch {recipe.eval['latency_batch']}), "
                    f"as most stored runs of this base: their results are comparable")
    if st.button("Open in Compress", key="ex_open", icon=":material/content_cut:",
                 width="stretch", help="edit every option of these stages on the Compress "
                                       "page"):
        open_in_compress(recipe)
        st.switch_page("pages/compress.py")


# ----------------------------------------------------------------------------- a stored result

def _fid(r: RunResult):
    f = r.fidelity or Fidelity()
    return f.fid, [f.fid_lo, f.fid_hi], f.label or ""


def show_stored(hit: dict, runs: list, controls: ex.Controls, grid: dict) -> None:
    where = "the shipped cached results" if hit["store"] == "cached" else "your run store"
    recipe = Recipe.from_dict(dict(hit["recipe"]))
    last = st.session_state.get("ex_job")
    last = ui.job_registry().snapshot(last) if last else None
    if last and last["state"] == "done" and last["key"] == recipe.key():
        how = f"computed by your run just now, in {last['elapsed_s'] / 60:.1f} min"
    else:
        how = "nothing was run"
    st.markdown(f"**Stored result** — {_name(hit)} · run `{hit['id']}` from {where}; {how}.")
    files = run_files(hit["path"], _mtime(hit["path"]))
    m = files["result"]
    note = ex.recovery_note(recipe, _fid(m)[0], runs)
    if note:
        st.warning(note, icon=":material/healing:")
    # the reference: the dense model at the same evaluation; for the dense model sampled
    # otherwise (fewer steps, another sampler), the dense model at the default sampling
    default = ex.Controls(base=controls.base)
    resampled = not hit["recipe"].get("stages") and \
        (controls.sampler, controls.steps) != (default.sampler, default.steps)
    reference = default if resampled else controls
    dense = lookup(runs, ex.dense_recipe_of(reference, grid))
    is_dense = not hit["recipe"].get("stages") and not resampled
    dense_files = run_files(dense["path"], _mtime(dense["path"])) if dense and not is_dense \
        else None
    ev = hit["recipe"].get("eval", {})
    setup = f"{ev.get('n')} samples, {ev.get('sampler')} {ev.get('steps')} steps, seed " \
            f"{hit['recipe'].get('seed', 0)}"

    cols = st.columns(2)
    with cols[0]:
        st.markdown("**Dense base** (this recipe)" if is_dense else
                    f"**Dense base, {default.sampler} {default.steps} steps** (the reference)"
                    if resampled else "**Dense base**")
        shown = files if is_dense else dense_files
        if shown and shown["grid"]:
            st.image(shown["grid"], width="stretch")
            st.caption(_fid(shown["result"])[2] or setup)
        else:
            st.info(f"No dense run with this evaluation setup ({setup}) is stored: set the "
                    f"controls to the dense model at this sampler and run it.")
            st.button("Dense model at this setup", key="ex_dense", on_click=apply_controls,
                      args=({**asdict(ex.Controls(base=controls.base)),
                             "sampler": reference.sampler, "steps": reference.steps},))
    with cols[1]:
        if not is_dense:
            st.markdown("**This recipe**")
            if files["grid"]:
                st.image(files["grid"], width="stretch")
            st.caption(_fid(m)[2] or setup)
        else:
            st.caption("All compression controls are off: this is the dense model. Move a "
                       "control to compare.")
    figures(hit, files, m, dense_files)
    small_plots(hit, files, runs)


def figures(hit: dict, files: dict, m: RunResult, dense_files) -> None:
    dm = dense_files["result"] if dense_files else RunResult()
    size, dsize = m.size or Size(), dm.size or Size()
    fid, ci, _ = _fid(m)
    dfid, dci, _ = _fid(dm)
    per = m.per_image
    cols = [*st.columns(3), *st.columns(3)]

    def ratio_of(a, b):
        return f"{a / b:.2f}× the dense" if a and b else None

    cols[0].metric("FID", f"{fid:.1f}" if fid is not None else "—",
                   ratio_of(fid, dfid) if dense_files else None, delta_color="inverse",
                   help=f"95% interval [{ci[0]:.1f}, {ci[1]:.1f}]" if ci[0] is not None
                   else None)
    cols[0].caption(f"[{ci[0]:.1f}, {ci[1]:.1f}]" + (f" · dense {dfid:.1f} [{dci[0]:.1f}, "
                                                      f"{dci[1]:.1f}]" if dfid else "")
                    if ci[0] is not None else "")
    cols[1].metric("Parameters", ui.fmt(size.params, "params"),
                   _pct(size.params, dsize.params), delta_color="inverse")
    cols[2].metric("Size", ui.fmt(size.bytes, "bytes"),
                   _pct(size.bytes, dsize.bytes), delta_color="inverse")
    cols[3].metric("MACs / image / step", ui.fmt(size.macs_per_image, "macs"),
                   _pct(size.macs_per_image, dsize.macs_per_image), delta_color="inverse")
    lat = m.latency or Latency()
    cols[4].metric("Speed-up per step", ui.fmt(m.speedup, "x"),
                   help=f"one UNet call, batch {lat.batch_size}, {lat.device}: "
                        f"the dense base's latency / this model's, timed in the same run")
    cols[5].metric("Speed-up per image", ui.fmt(per.speedup if per else None, "x"),
                   help="time to draw one image at this run's sampler, steps and caching "
                        "vs the dense model at DDIM 50, timed in the same run" if per else
                        "not measured: this run was made before per-image timing (`litediff "
                        "runs --remeasure <id>` redoes it where the model is stored)")
    if per and per.busy:
        st.caption(f":material/warning: The per-image time was taken while other work ran "
                   f"(load {per.load_average:.1f} on {per.threads} threads): the ratio may be "
                   f"off; `litediff runs --remeasure {hit['id']}"
                   f"{' --store cached_results' if hit['store'] == 'cached' else ''}` times "
                   f"it again.")
    notes = [n for n in m.notes or [] if "simulated" in n or "sparsity" in n
             or "unstructured" in n]
    for note in notes[:2]:
        st.caption(f":material/info: {note}")


def _pct(a, b):
    if not a or not b or a == b:
        return None
    return f"{(a - b) / b:+.0%} vs the dense"


def small_plots(hit: dict, files: dict, runs: list) -> None:
    cols = st.columns([3, 2])
    with cols[0]:
        rows, changes = files["rows"], files["changes"]
        if changes is not None and rows:
            st.plotly_chart(layer_thumbnail(changes, rows), key="ex_layers",
                            config={"displayModeBar": False}, **ui.CHART)
            if st.button("Per-layer details", key="ex_layers_page",
                         icon=":material/view_module:", help="this run on the Layers page"):
                st.session_state["layers_focus"] = hit["ref"]
                st.switch_page("pages/layers.py")
        else:
            st.caption("Per layer: no layer changed its channels or sparsity (quantization "
                       "and caching keep every shape).")
    with cols[1]:
        st.plotly_chart(small_pareto(hit, runs), key="ex_pareto",
                        config={"displayModeBar": False}, **ui.CHART)
        st.caption("Ringed: this recipe; grey: the other stored runs of this base with the "
                   "same sample count (the Pareto page has every axis).")


def layer_thumbnail(changes: pd.DataFrame, rows: list) -> go.Figure:
    labels = {"channels_kept": "channels kept", "params_kept": "params kept",
              "sparsity": "sparsity"}
    fig = go.Figure(go.Heatmap(
        z=[changes[r].astype(float).tolist() for r in rows],
        x=layer_names.short_layer_names(changes["name"]), y=[labels[r] for r in rows], zmin=0, zmax=1,
        colorscale="Viridis", xgap=1, ygap=2, colorbar={"thickness": 10, "len": 0.9},
        customdata=[changes["name"].tolist()] * len(rows),
        hovertemplate="%{customdata}<br>%{y}: %{z:.2f}<extra></extra>"))
    fig.update_layout(height=120 + 40 * len(rows), margin={"t": 30, "b": 10, "l": 10, "r": 10},
                      template="plotly_white",
                      title={"text": "Per layer, input → output", "font": {"size": 13}},
                      xaxis={"showticklabels": False})
    return fig


def small_pareto(hit: dict, runs: list) -> go.Figure:
    n = (hit["recipe"].get("eval") or {}).get("n")
    pts = [r for r in runs if r["status"] == "done" and r["fid"] is not None
           and (r["recipe"].get("eval") or {}).get("n") == n
           and r["recipe"].get("base") == hit["recipe"].get("base")
           and r["row"].get("params")]
    fig = go.Figure(go.Scatter(
        x=[r["row"]["params"] / 1e6 for r in pts], y=[r["fid"] for r in pts], mode="markers",
        marker={"size": 7, "color": "#7f8c9a"}, name="stored runs",
        text=[f"{_name(r)}<br>{r['row']['eval']}" for r in pts],
        hovertemplate="%{text}<br>%{x:.2f} M params, FID %{y:.1f}<extra></extra>"))
    me = hit["row"]
    if me.get("params") and hit["fid"] is not None:
        fig.add_trace(go.Scatter(
            x=[me["params"] / 1e6], y=[hit["fid"]], mode="markers", name="this recipe",
            marker={"size": 16, "symbol": "circle-open", "line": {"width": 3},
                    "color": "#e4572e"}, hoverinfo="skip"))
    fids = [r["fid"] for r in pts if r["fid"] > 0]
    ticks = [v for v in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
             if fids and min(fids) / 2 <= v <= max(fids) * 2]
    fig.update_layout(height=260, margin={"t": 30, "b": 10, "l": 10, "r": 10},
                      template="plotly_white",
                      title={"text": f"FID vs params ({n} samples)", "font": {"size": 13}},
                      showlegend=False, xaxis={"title": "params (M)", "rangemode": "tozero"},
                      yaxis={"title": "FID (log)", "type": "log", "tickvals": ticks or None,
                             "minor": {"showgrid": False}})
    return fig


# ----------------------------------------------------------------------------- off the grid

def _differences(a: ex.Controls, b: ex.Controls) -> str:
    labels = {"ratio": "ratio", "method": "method", "kd": "KD", "kd_frac": "kd_frac",
              "lora": "LoRA", "quant": "quant", "sampler": "sampler", "steps": "steps",
              "cache": "caching", "train_steps": "training"}  # what differs, in words
    show = {"method": lambda v: "unstructured L1" if v == ex.UNSTRUCTURED else v,
            "kd": lambda v: f"s={v}" if v else "off", "lora": lambda v: f"r={v}" if v else "off",
            "quant": ex.QUANT_LABELS.get, "cache": ex.cache_label,
            "train_steps": lambda v: f"{v:,} steps"}
    out = []
    for name, label in labels.items():
        x, y = getattr(a, name), getattr(b, name)
        if x != y:
            f = show.get(name, lambda v: f"{v:g}" if isinstance(v, float) else str(v))
            out.append(f"{label} {f(y)}")
    return ", ".join(out)


def show_off_grid(controls: ex.Controls, recipe, runs: list, grid: dict) -> None:
    state = st.session_state
    st.info("Not run yet: this exact recipe is in neither the shipped cached results nor your "
            "run store. Pick a stored neighbour for an instant result, or run it.")
    candidates = [(ex.Controls(**r["controls"]), r) for r in runs
                  if r["controls"] and r["status"] == "done" and ex.grid_of(r["recipe"]) == grid]
    near = ex.nearest(controls, candidates, k=5)
    if near:
        st.markdown("**Nearest stored runs** — click one to set the controls")
        for dist, c, r in near:
            fid = f"FID {r['fid']:.0f}" if r["fid"] is not None else "FID —"
            params = ui.fmt(r["row"].get("params"), "params")
            cols = st.columns([5, 2])
            cols[0].button(f"{_name(r)} — {fid}, {params}",
                           key=f"ex_near_{r['store']}_{r['id']}", on_click=apply_controls,
                           args=(asdict(c),), width="stretch",
                           help=f"{r['row']['method']} · {r['row']['eval']}")
            cols[1].caption(f"its {_differences(controls, c)}")
    else:
        st.caption(f"No stored run of `{controls.base}` can be set from these controls.")

    warning = ex.budget_warning(recipe, runs)
    if warning:
        st.warning(warning, icon=":material/warning:")

    ui.imports_done()  # the estimate times the base model: torch from here on
    from litediff_core.device import resolve_device

    try:
        device = resolve_device(state.get("_kept_cp_device", "auto"))
        ui.load_model(controls.base.strip())
    except LiteDiffError as e:
        st.error(str(e))
        return
    holder = rates_of(controls.base.strip(), device)
    if holder["rates"] is not None:
        estimate(recipe, holder["rates"], next((r for _, _, r in near if r["seconds"]), None))
    elif holder["error"]:
        st.warning(f"No time estimate: timing the base model failed ({holder['error']}).")
    else:
        wait_for_rates(controls.base.strip(), device)
    registry = ui.job_registry()
    active = next((j for j in registry.running() if j["key"] == recipe.key()), None)
    job_id = active["id"] if active else None
    if job_id is None and st.button("Run", type="primary", key="ex_run",
                                    icon=":material/play_arrow:"):
        job_id = ui.submit_run(recipe, device=device)
        state["ex_job"] = state["cp_job"] = job_id
    if job_id:
        job_panel(job_id)
    last = ui.job_registry().snapshot(state["ex_job"]) if state.get("ex_job") else None
    if last and last["key"] == recipe.key() and last["state"] in ("failed", "cancelled"):
        (st.error if last["state"] == "failed" else st.warning)(
            f"The last run of this recipe {last['state']}: {last['error']}")


@st.fragment(run_every=1.0)
def wait_for_rates(source: str, device: str) -> None:
    """Shown only while the throughput is being measured; reruns the page once it is known."""
    holder = rates_of(source, device)
    if holder["rates"] is not None or holder["error"]:
        st.rerun()
    st.caption(":material/timer: Timing one training step and one sampling step of the base "
               "model on this machine, once per server (a few seconds): the estimate follows.")


def estimate(recipe, rates: dict, neighbour=None) -> None:
    est = ex.estimate_seconds(recipe, rates)
    cols = st.columns([1, 3])
    cols[0].metric("Estimated run time", ex.minutes_label(est["total_s"]))
    cols[1].caption(
        f"Before it starts, from throughput measured on this machine ({rates['device']}, "
        f"{rates['threads']} threads): one training step of the base model at batch "
        f"{rates['batch_size']} took {rates['train_step_s']:.2f} s and one sampling step "
        f"{rates['sample_step_s']:.2f} s. This recipe: {est['train_steps']:,} training steps "
        f"({est['train_images']:,} images) and {est['image_steps']:,} image-steps of sampling "
        f"(FID samples, consistency, timing) — rough, at the dense model's speed."
        + (f" The machine was busy when this was measured (load {rates['load']:.1f} on "
           f"{rates['cpus']} cores): idle, it runs faster." if rates.get("load") and
           rates.get("cpus") and rates["load"] > rates["cpus"] else
           " Other jobs on the machine slow it down.")
        + (f" For comparison, the nearest stored run ({_name(neighbour)}) took "
           f"{ex.minutes_label(neighbour['seconds'])[2:]} from start to finish on the machine "
           f"that made it." if neighbour else ""))


def _name(run: dict) -> str:
    return run["recipe"].get("name") or run["row"]["method"]


@st.fragment(run_every=1.0)
def job_panel(job_id: str) -> None:
    registry, snap = ui.job_registry(), ui.live_snapshot(job_id)
    if snap is None:
        return
    eta = snap["eta_s"]
    st.progress(snap["fraction"], text=f"{snap['label']} — {snap['message'] or 'starting…'}")
    st.caption(f"{snap['fraction']:.0%} · elapsed {snap['elapsed_s']:.0f} s"
               + (f" · about {eta / 60:.0f} min left (from its progress)" if eta else "")
               + " · the Compress page follows it too (live loss, details)")
    st.button("Cancel", key=f"ex_cancel_{job_id}", on_click=registry.cancel, args=(job_id,),
              disabled=snap.get("cancelling", False))


# ----------------------------------------------------------------------------- page

def main() -> None:
    st.title("Explore")
    st.caption("Set a few controls: they define one compression recipe. If it was run before "
               "(the shipped sweep or your own runs), its samples and figures show at once.")
    sync_from_url()
    warned = st.session_state.get("_ex_warn")
    left, right = st.columns([1, 2.4], gap="large")
    with left:
        controls = control_panel()
    write_url(controls)
    if warned and warned["controls"] == controls:
        for text in warned["warnings"]:
            right.warning(text, icon=":material/link_off:")
    runs = runs_now()
    grid = grid_for(controls.base)
    try:
        recipe = ex.recipe_of(controls, grid)
    except LiteDiffError as e:
        right.error(str(e))
        return
    with left:
        recipe_box(recipe)
    with right:
        hit = lookup(runs, recipe)
        if hit is not None:
            show_stored(hit, runs, controls, grid)
        else:
            show_off_grid(controls, recipe, runs, grid)


main()
