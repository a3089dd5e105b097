"""Layers: what a compression run did to each layer and block (the run's ``layers.csv``, written
by ``litediff_core.runs``), and how two runs differ."""

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from litediff_core import layer_names, slides
from litediff_core.errors import LiteDiffError
from litediff_core.models import read_meta
from pages import _shared as ui

SETUP = ("params: weights of the layer; MACs: multiply-accumulates of one image per UNet step "
         "(fvcore trace); channels: output channels of the layer's weight")


ROWS = {  # heatmap rows: what a run can change in a layer
    "channels_kept": "channels kept (after / before)",
    "params_kept": "params kept (factorised: after / before)",
    "sparsity": "sparsity (fraction of zero weights)",
}


def model_shape(run_folder, base: str = "") -> str:
    """C×H×W of a run's saved model (from its UNet config), else of its base model (shipped
    runs keep no weights; compression keeps the image shape), or "model-sized"."""
    for cfg in (Path(run_folder) / "model" / "unet" / "config.json",
                Path(run_folder) / "model" / "config.json"):
        try:
            c = json.loads(cfg.read_text())
            size = c["sample_size"]
            h, w = (size, size) if isinstance(size, int) else size
            return f"{c['in_channels']}×{h}×{w}"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    try:
        meta = read_meta(base) if base else None
    except LiteDiffError:  # the base is gone or unreadable now
        meta = None
    return f"{meta.channels}×{meta.resolution}×{meta.resolution}" if meta else "model-sized"


def heatmap(changes, rows, title: str) -> go.Figure:
    """One row per kind of change the run made (``rows``), one column per layer with weights,
    in forward order, labelled with short block names (full names on hover); top-level blocks
    are marked above the map."""
    changes = changes[changes[rows].notna().any(axis=1)]  # e.g. norms have no sparsity
    short = layer_names.short_layer_names(changes["name"])
    z = [changes[r].astype(float).tolist() for r in rows]
    top = max([1.0] + [v for row in z for v in row if v == v])
    custom = [list(zip(changes["name"], changes["channels_before"].fillna(0).astype(int),
                       changes["channels_after"].fillna(0).astype(int),
                       changes["params_before"].fillna(0).astype(int),
                       changes["params_after"].fillna(0).astype(int)))] * len(rows)
    fig = go.Figure(go.Heatmap(
        z=z, x=short, y=[ROWS[r] for r in rows], zmin=0, zmax=top, colorscale="Viridis",
        colorbar={"title": "fraction"}, customdata=custom, xgap=1, ygap=2,
        hovertemplate="<b>%{customdata[0]}</b><br>%{y}: %{z:.3f}<br>channels %{customdata[1]}"
                      " → %{customdata[2]}<br>params %{customdata[3]} → %{customdata[4]}"
                      "<extra></extra>"))
    blocks = changes["name"].map(layer_names.block_of).tolist()
    labels, lines, start = [], [], 0
    for i in range(1, len(blocks) + 1):  # a label over each UNet block, a line between blocks
        if i == len(blocks) or blocks[i] != blocks[start]:
            if i - start >= 3:  # single layers (conv_in, conv_out…) are named by their tick
                labels.append({"x": (start + i - 1) / 2, "y": 1.0, "yref": "paper",
                               "yanchor": "bottom", "showarrow": False, "font": {"size": 12},
                               "text": f"<b>{layer_names.short_layer_name(blocks[start])}</b>"})
            if i < len(blocks):
                lines.append({"type": "line", "x0": i - 0.5, "x1": i - 0.5, "y0": 0, "y1": 1,
                              "yref": "paper", "line": {"color": "white", "width": 3}})
            start = i
    fig.update_layout(title=title, height=330 + 70 * len(rows), margin={"t": 110, "b": 10},
                      template="plotly_white",
                      annotations=labels, shapes=lines,
                      xaxis={"tickangle": -60, "tickfont": {"size": 10},
                             "title": "layers with weights, input → output"})
    fig.update_traces(colorbar={"thickness": 14, "len": 1.0, "tickvals": [0, 0.5, 1]})
    return fig


@st.cache_resource(show_spinner=False, max_entries=32)
def layer_views(root: str, run_id: str, mtime_ns: int, title: str, setup: str) -> dict:
    """What the page draws of one run: its layer table, the rows it changed, the heatmap (None
    when nothing changed), the per-block table, summary and bars — built once per run folder
    version (runs are written atomically, so a rewritten run has a new folder mtime) for every
    session: building and validating the plotly figures costs 0.1 s of a 2-core machine's page
    run, and a DataFrame argument would be hashed on every run. Shared: never change them."""
    from litediff_core.runs import RunStore

    layers = RunStore(root).layers(run_id)
    changes = layer_names.layer_changes(layers)
    rows = layer_names.changed_rows(changes)
    blocks = layer_names.block_table(layers)
    heat = None
    if rows:
        names = " and ".join(ROWS[r].split(" (")[0] for r in rows)
        heat = heatmap(changes, rows, f"Per layer: {names} — {title}{setup}")
    return {"layers": layers, "rows": rows, "heatmap": heat, "blocks": blocks,
            "summary": block_summary(blocks),
            "bars": block_bars(blocks, f"Per block: base (before) vs this run (after){setup}")}


def table_height(rows: int) -> int:
    """A dataframe height that shows every row (no inner scrolling for short tables)."""
    return 38 + 35 * min(rows, 25)


def count(value) -> str:
    """1.27 M, 52.1 k, 160: three significant digits at any size (blocks of a tiny model too)."""
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= div:
            return f"{slides.sig(value / div)}{unit}"
    return f"{value:.0f}"


def block_summary(blocks):
    """Params and MACs per top-level block, before → after, as readable text."""
    def change(before, after):
        return f"{after / before - 1:+.0%}" if before else ("new" if after else "—")

    rows = []
    for _, b in blocks.iterrows():
        if not (b["params_before"] or b["params_after"] or b["macs_before"] or b["macs_after"]):
            continue  # parameter-free and MAC-free (activations, time_proj)
        rows.append({
            "block": b["block"],
            "params before → after": f"{count(b['params_before'])} → "
                                     f"{count(b['params_after'])}",
            "params change": change(b["params_before"], b["params_after"]),
            "MACs before → after": f"{count(b['macs_before'])} → "
                                   f"{count(b['macs_after'])}",
            "MACs change": change(b["macs_before"], b["macs_after"]),
        })
    return pd.DataFrame(rows)


def nothing_changed_note(recipe: dict) -> str:
    stages = [s.get("stage", "?") for s in recipe.get("stages", [])]
    what = (f"its stages ({', '.join(stages)}) change weight values or how they are computed, "
            "not which weights exist") if stages else "it has no compression stage"
    return (f"This run changed no layer's channels, shape or sparsity: {what}. Its layer map "
            "would be the base's, so none is drawn.")


AFTER = (("params_before", "macs_before"), ("params_after", "macs_after"))
BAR_COLOURS = ("#636efa", "#00cc96")   # before / A, after / B: the same in both panels


def block_bars(blocks, title: str, names=("before", "after"), cols=AFTER) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "Parameters per block (M)", "MACs per image per UNet step, per block (M)"))
    for name, (p, m), colour in zip(names, cols, BAR_COLOURS):  # one colour per legend entry
        fig.add_bar(x=blocks["block"], y=blocks[p] / 1e6, name=name, legendgroup=name,
                    marker_color=colour, row=1, col=1)
        fig.add_bar(x=blocks["block"], y=blocks[m] / 1e6, name=name, legendgroup=name,
                    marker_color=colour, showlegend=False, row=1, col=2)
    fig.update_layout(title=title, barmode="group", height=400, margin={"t": 80},
                      template="plotly_white")
    fig.update_yaxes(title_text="M params", row=1, col=1)
    fig.update_yaxes(title_text="M MACs", row=1, col=2)
    return fig


def main() -> None:
    st.title("Layers")
    table = ui.runs_table()
    ui.no_cached_results_info(table)
    choices = ui.run_choices(table[table["status"] == "done"], need="layers.csv")
    if not choices:
        st.info("No finished run with a layer table yet: run a recipe on the Compress page.")
        return
    refs = list(choices)
    focus = st.session_state.get("layers_focus")
    if focus not in refs:  # open on a compressed run: the dense base's map is all "kept"
        dense = table.set_index("ref")["dense"]
        focus = next((r for r in refs if not dense.get(r, False)), refs[0])
    ref = st.selectbox("Run", refs, format_func=choices.get, key="ly_run",
                       index=refs.index(focus))
    store, run_id = ui.resolve(ref)
    run = store.load(run_id)
    recipe = run["recipe"]
    st.caption(f"`{run['result'].method or ''}` on `{recipe.get('base', '')}` · {SETUP}.")
    shape = model_shape(store.root / run_id, recipe.get("base", ""))
    setup = f"<br><sup>fvcore trace of one {shape} image per UNet step</sup>"
    views = layer_views(str(store.root), run_id, (store.root / run_id).stat().st_mtime_ns,
                        str(recipe.get("name")), setup)
    layers, rows = views["layers"], views["rows"]

    totals = layers[["params_before", "params_after", "macs_before", "macs_after"]].sum()
    nonzero = float((layers["params_after"].fillna(0)
                     * (1 - layers["sparsity_after"].fillna(0))).sum())
    c = st.columns(3)
    for col, label, before, after, kind in (
            (c[0], "Parameters (sum of layers)", totals["params_before"], totals["params_after"],
             "params"),
            (c[1], "Non-zero parameters", totals["params_before"], nonzero, "params"),
            (c[2], "MACs / image / step", totals["macs_before"], totals["macs_after"], "macs")):
        if label.startswith("Non-zero") and "sparsity" not in rows:
            continue  # the same as the parameters when no weight was zeroed
        change = after / before - 1 if before else 0.0
        col.metric(label, ui.fmt(after, kind), f"{change:+.1%} vs base",
                   delta_color="inverse" if abs(change) >= 5e-4 else "off")
    if "sparsity" in rows:
        st.caption("Zeroed weights still count as parameters and MACs in dense storage and "
                   "dense kernels: the non-zero count is what sparse storage would keep.")

    if rows:
        st.plotly_chart(views["heatmap"], key="ly_heat", **ui.CHART)
        stages = {s.get("stage") for s in recipe.get("stages", [])}
        if "sparsity" in rows and "unstructured-prune" not in stages:
            st.caption(f"No pruning stage zeroed these weights: they are weights that "
                       f"{', '.join(sorted(stages)) or 'the run'} left (or rounded) at zero.")
        st.caption("Rows appear only for what this run changed; columns are the layers with "
                   "weights, named block by block (down1.res0.conv1 = "
                   "down_blocks.1.resnets.0.conv1; hover for the full name).")
    else:
        st.info(nothing_changed_note(recipe))
    st.markdown("**Per block** (top-level blocks of the UNet: base → this run)")
    st.table(views["summary"], hide_index=True)  # a dozen rows: static, no data-grid to load
    st.plotly_chart(views["bars"], key="ly_blocks", **ui.CHART)
    table = st.expander("Per-layer table", key="ly_table", on_change="rerun")
    if table.open:  # built when opened: a hundred rows the browser need not draw on every visit
        table.dataframe(layers.sort_values("name", key=lambda n: n.map(layer_names.layer_order),
                                           kind="stable"), hide_index=True)

    st.subheader("Difference between two runs")
    others = [r for r in refs if r != ref]
    if not others:
        st.info("Only one run has a layer table: run another recipe to compare.")
        return
    other = st.selectbox("Compare with", others, index=None, format_func=choices.get,
                         key="ly_other", placeholder="pick a run to compare with this one")
    if other is None:  # drawn on request: two more figures and tables to paint on every visit
        return
    store_b, id_b = ui.resolve(other)
    layers_b = store_b.layers(id_b)
    a, b = views["blocks"], layer_names.block_table(layers_b)
    both = a.merge(b, on="block", how="outer", suffixes=("_a", "_b"), sort=False).fillna(0)
    both = both.sort_values("block", key=lambda n: n.map(layer_names.layer_order), kind="stable")
    both = both[both.drop(columns="block").abs().sum(axis=1) > 0].reset_index(drop=True)
    st.plotly_chart(block_bars(
        both, f"After compression: A = {run_id} vs B = {id_b}{setup}", names=(f"A {run_id}",
                                                                     f"B {id_b}"),
        cols=(("params_after_a", "macs_after_a"), ("params_after_b", "macs_after_b"))),
        key="ly_diff", **ui.CHART)
    def signed(v):
        return ("+" if v > 0 else "−" if v < 0 else "") + count(abs(v))

    diff = pd.DataFrame({
        "block": both["block"],
        "params A": both["params_after_a"].map(count),
        "params B": both["params_after_b"].map(count),
        "params B − A": (both["params_after_b"] - both["params_after_a"]).map(signed),
        "MACs A": both["macs_after_a"].map(count), "MACs B": both["macs_after_b"].map(count),
        "MACs B − A": (both["macs_after_b"] - both["macs_after_a"]).map(signed)})
    st.dataframe(diff, hide_index=True, height=table_height(len(diff)))
    ca, cb = layer_names.channel_table(layers), layer_names.channel_table(layers_b)
    lay = ca.merge(cb, on="name", how="outer", suffixes=("_A", "_B"), sort=False)
    lay = lay.sort_values("name", key=lambda n: n.map(layer_names.layer_order), kind="stable")
    changed = lay[(lay["channels_after_A"] != lay["channels_after_B"])
                  | ((lay["sparsity_A"] - lay["sparsity_B"]).abs() > 1e-9)]
    st.caption(f"{len(changed)} of {len(lay)} layers differ in kept channels or sparsity.")
    if len(changed):
        st.dataframe(changed[["name", "channels_before_A", "channels_after_A",
                              "channels_after_B", "sparsity_A", "sparsity_B"]], hide_index=True)


main()
