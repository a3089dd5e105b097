"""Pareto: quality against cost for every finished run, with the frontier of runs that nothing
beats on both axes. Click a point to see its samples."""

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import _shared as ui

HOVER = ("<b>%{customdata[1]}</b><br>%{customdata[2]}<br>x: %{x:.4g}<br>y: %{y:.4g}<br>"
         "eval: %{customdata[3]} · %{customdata[4]} features<br>latency on %{customdata[5]}"
         "<br>run %{customdata[0]}<extra></extra>")
CUSTOM = ["ref", "name", "method", "eval", "extractor", "device"]


def figure(df: pd.DataFrame, x: str, y: str, setup: str) -> go.Figure:
    xlabel, scale = ui.AXES[x]
    ylabel, higher = ui.METRICS[y]
    fig = go.Figure()
    for method, g in df.groupby("method", sort=True):
        error = None
        if y == "fid" and g["fid_lo"].notna().any():
            error = {"type": "data", "symmetric": False, "array": (g["fid_hi"] - g["fid"]),
                     "arrayminus": (g["fid"] - g["fid_lo"]), "thickness": 1}
        fig.add_scatter(x=g[x] * scale, y=g[y], mode="markers", name=method or "?",
                        error_y=error, marker={"size": 11},
                        customdata=g[CUSTOM].fillna("").values, hovertemplate=HOVER)
    front = df[ui.pareto_front(df, x, y, higher)].sort_values(x)
    if len(front):
        fig.add_scatter(x=front[x] * scale, y=front[y], mode="lines", name="Pareto frontier",
                        line={"dash": "dash", "color": "gray"}, hoverinfo="skip")
    fig.update_layout(
        title={"text": f"{ylabel.split(' (')[0]} vs {xlabel.split(' (')[0]}"
                       f"<br><sup>{setup}</sup>"},
        xaxis_title=xlabel, yaxis_title=ylabel, height=520, legend_title="method",
        clickmode="event+select")
    return fig


def overlay_reported(fig: go.Figure, x: str, y: str) -> None:
    """The seed papers' own numbers, when ``litediff_core/reported_points.csv`` lists any."""
    points = ui.reported_points()
    if points.empty:
        st.caption("No reported points from the seed papers are overlaid: none could be "
                   "verified from the papers' text here, and numbers are never invented.")
        return
    rows = points[(points["metric"].str.lower() == y)]
    if x != "params" or rows.empty:
        st.caption("Reported points exist only as FID vs parameters.")
        return
    if st.checkbox("Overlay the seed papers' reported points (reported, different setup)",
                   key="pa_reported"):
        fig.add_scatter(x=rows["params_m"], y=rows["value"], mode="markers+text",
                        name="reported, different setup", text=rows["paper"],
                        textposition="top center", marker={"symbol": "x", "size": 10},
                        customdata=rows[["method", "source_note"]].values,
                        hovertemplate="%{text}: %{customdata[0]}<br>%{customdata[1]}"
                                      "<extra>reported, different setup</extra>")


def selected_ref(event) -> str:
    try:
        points = event.selection.points
    except AttributeError:
        points = (event or {}).get("selection", {}).get("points", [])
    for p in points or []:
        data = p.get("customdata") if isinstance(p, dict) else None
        if data:
            return data[0]
    return ""


def main() -> None:
    st.title("Pareto")
    table = ui.runs_table()
    ui.no_cached_results_info(table)
    done = table[table["status"] == "done"]
    if done.empty:
        st.info("No finished runs yet: run recipes on the Compress page (or regenerate the "
                f"cached results with {ui.REGENERATE_HINT}).")
        return
    c = st.columns(2)
    y = c[0].selectbox("Quality (y)", list(ui.METRICS), format_func=lambda k: ui.METRICS[k][0],
                       key="pa_y")
    x = c[1].selectbox("Cost (x)", list(ui.AXES), format_func=lambda k: ui.AXES[k][0],
                       key="pa_x")
    setups = sorted(done["eval"].dropna().unique())
    if len(setups) > 1:
        # the setup most runs share, and that of your newest run (so a new run shows at once)
        default = [done["eval"].value_counts().index[0]]
        own = done[done["store"] == "yours"].dropna(subset=["eval"])
        if not own.empty:
            newest = own.sort_values("created")["eval"].iloc[-1]
            default += [newest] if newest not in default else []
        chosen = st.multiselect("Evaluation setups", setups, default=default, key="pa_setups",
                                help="points are comparable within one setup")
        if len(chosen) > 1:
            st.warning("The points come from different evaluation setups (sample count, "
                       "sampler, steps): compare within one setup.")
        done = done[done["eval"].isin(chosen)]
    df = done.dropna(subset=[x, y])
    if df.empty:
        st.info(f"No finished run has both {ui.METRICS[y][0]} and {ui.AXES[x][0]}.")
        return
    setup = " | ".join(sorted(set(
        f"{r['eval']}, {r['extractor']} features, latency on {r['device']} batch "
        f"{int(r['latency_batch']) if pd.notna(r['latency_batch']) else '?'}"
        for _, r in df.iterrows())))
    fig = figure(df, x, y, setup)
    overlay_reported(fig, x, y)
    event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="pa_chart")
    st.caption(f"One point per finished run ({len(df)}), coloured by method; the dashed line "
               f"joins the runs no other run beats on both axes"
               f"{'; FID error bars: bootstrap 95% interval' if y == 'fid' else ''}. "
               f"Setup: {setup}. Click a point to see its samples.")

    export(fig, df, x, y)

    ref = selected_ref(event)
    if ref:
        row = df.set_index("ref").loc[ref] if ref in set(df["ref"]) else None
        if row is not None:
            st.subheader(f"Selected: {row['name']}")
            cols = st.columns([2, 3])
            grid = Path(row["path"]) / "samples.png"
            if grid.exists():
                cols[0].image(str(grid), caption=f"samples — {row['eval']}", width="stretch")
            cols[1].dataframe(row[["method", "params", "macs", "bytes", "latency_ms", "speedup",
                                   "fid", "fid_lo", "fid_hi", "kid", "ssim_to_base",
                                   "eval", "extractor", "device"]].rename("value").astype(str))
            st.session_state["layers_focus"] = ref
            cols[1].page_link("pages/layers.py", label="Open this run on the Layers page",
                              icon=":material/view_module:")


def export(fig: go.Figure, df: pd.DataFrame, x: str, y: str) -> None:
    c = st.columns(2)
    cols = ["ref", "name", "method", x, y] + (["fid_lo", "fid_hi"] if y == "fid" else []) + [
        "eval", "extractor", "device", "latency_batch"]
    c[0].download_button("Download points (CSV)", df[cols].to_csv(index=False),
                         f"pareto-{y}-vs-{x}.csv", "text/csv", key="pa_csv")
    c[1].download_button("Download figure (interactive HTML)",
                         lambda: fig.to_html(include_plotlyjs=True),
                         f"pareto-{y}-vs-{x}.html", "text/html", key="pa_html")
    # PNG through kaleido, which drives a local Chrome/Chromium: made on request (≈3 s)
    want = (x, y, len(df))
    if c[0].button("Make a PNG of the figure", key="pa_png_make"):
        try:
            st.session_state["pa_png_bytes"] = (want, fig.to_image(format="png", scale=2))
        except Exception as e:  # kaleido missing, or no Chrome/Chromium on this machine
            st.session_state["pa_png_bytes"] = (want, None)
            c[0].warning(f"PNG export needs `kaleido` and a Chrome or Chromium browser "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]}). The HTML file "
                         f"opens in any browser and its camera icon saves a PNG.")
    made = st.session_state.get("pa_png_bytes")
    if made and made[0] == want and made[1]:
        c[0].download_button("Download figure (PNG)", made[1], f"pareto-{y}-vs-{x}.png",
                             "image/png", key="pa_png")

main()
