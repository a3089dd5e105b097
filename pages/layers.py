"""Layers: what a compression run did to each layer and block (the run's ``layers.csv``, written
by ``litediff_core.runs``), and how two runs differ."""

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from pages import _shared as ui

SETUP = ("params: weights of the layer; MACs: multiply-accumulates of one image per UNet step "
         "(fvcore trace); channels: output channels of the layer's weight")


def heatmap(layers, title: str) -> go.Figure:
    ch = ui.channel_table(layers)
    fig = go.Figure(go.Heatmap(
        z=[ch["channels_kept"].tolist(), ch["sparsity"].tolist()], x=ch["name"],
        y=["channels kept (after / before)", "sparsity (fraction of zero weights)"],
        zmin=0, zmax=1, colorscale="Viridis", colorbar={"title": "fraction"},
        customdata=[list(zip(ch["channels_before"], ch["channels_after"]))] * 2,
        hovertemplate="%{x}<br>%{y}: %{z:.3f}<br>channels %{customdata[0]} → "
                      "%{customdata[1]}<extra></extra>"))
    fig.update_layout(title=title, height=330, margin={"t": 60, "b": 10},
                      xaxis={"showticklabels": False, "title": "layers, input → output (hover "
                                                               "for names)"})
    return fig


AFTER = (("params_before", "macs_before"), ("params_after", "macs_after"))


def block_bars(blocks, title: str, names=("before", "after"), cols=AFTER) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "Parameters per block (M)", "MACs per image per UNet step, per block (M)"))
    for name, (p, m) in zip(names, cols):
        fig.add_bar(x=blocks["block"], y=blocks[p] / 1e6, name=name, legendgroup=name,
                    row=1, col=1)
        fig.add_bar(x=blocks["block"], y=blocks[m] / 1e6, name=name, legendgroup=name,
                    showlegend=False, row=1, col=2)
    fig.update_layout(title=title, barmode="group", height=400, margin={"t": 80})
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
        methods = table.set_index("ref")["method"]
        focus = next((r for r in refs if methods.get(r) != "base (dense)"), refs[0])
    ref = st.selectbox("Run", refs, format_func=choices.get, key="ly_run",
                       index=refs.index(focus))
    store, run_id = ui.resolve(ref)
    run = store.load(run_id)
    layers = store.layers(run_id)
    recipe, m = run["recipe"], run["metrics"]
    st.caption(f"`{m.get('method', '')}` on `{recipe.get('base', '')}` · {SETUP}.")

    totals = layers[["params_before", "params_after", "macs_before", "macs_after"]].sum()
    c = st.columns(2)
    c[0].metric("Parameters (sum of layers)", ui.fmt(totals["params_after"], "params"),
                f"{totals['params_after'] / totals['params_before'] - 1:+.1%} vs base",
                delta_color="inverse")
    c[1].metric("MACs / image / step", ui.fmt(totals["macs_after"], "macs"),
                f"{totals['macs_after'] / totals['macs_before'] - 1:+.1%} vs base",
                delta_color="inverse")

    shape = ui.model_shape(store.root / run_id)
    setup = f"<br><sup>fvcore trace of one {shape} image per UNet step; fractions in [0, 1]</sup>"
    st.plotly_chart(heatmap(layers, f"Per-layer channels kept and sparsity — "
                                    f"{recipe.get('name')}{setup}"), key="ly_heat")
    blocks = ui.block_table(layers)
    st.plotly_chart(block_bars(blocks, "Per block (first two parts of the layer name): base "
                                       f"(before) vs this run (after){setup}"), key="ly_blocks")
    with st.expander("Per-layer table"):
        st.dataframe(layers, hide_index=True)

    st.subheader("Difference between two runs")
    others = [r for r in refs if r != ref]
    if not others:
        st.info("Only one run has a layer table: run another recipe to compare.")
        return
    other = st.selectbox("Compare with", others, format_func=choices.get, key="ly_other")
    store_b, id_b = ui.resolve(other)
    layers_b = store_b.layers(id_b)
    a, b = ui.block_table(layers), ui.block_table(layers_b)
    both = a.merge(b, on="block", how="outer", suffixes=("_a", "_b"), sort=False).fillna(0)
    st.plotly_chart(block_bars(
        both, f"After compression: A = {run_id} vs B = {id_b}{setup}", names=(f"A {run_id}",
                                                                     f"B {id_b}"),
        cols=(("params_after_a", "macs_after_a"), ("params_after_b", "macs_after_b"))),
        key="ly_diff")
    diff = both[["block"]].assign(
        params_A=both["params_after_a"], params_B=both["params_after_b"],
        params_B_minus_A=both["params_after_b"] - both["params_after_a"],
        MMACs_A=both["macs_after_a"] / 1e6, MMACs_B=both["macs_after_b"] / 1e6,
        MMACs_B_minus_A=(both["macs_after_b"] - both["macs_after_a"]) / 1e6)
    st.dataframe(diff, hide_index=True)
    ca, cb = ui.channel_table(layers), ui.channel_table(layers_b)
    lay = ca.merge(cb, on="name", how="outer", suffixes=("_A", "_B"), sort=False)
    changed = lay[(lay["channels_after_A"] != lay["channels_after_B"])
                  | ((lay["sparsity_A"] - lay["sparsity_B"]).abs() > 1e-9)]
    st.caption(f"{len(changed)} of {len(lay)} layers differ in kept channels or sparsity.")
    if len(changed):
        st.dataframe(changed[["name", "channels_before_A", "channels_after_A",
                              "channels_after_B", "sparsity_A", "sparsity_B"]], hide_index=True)


main()
