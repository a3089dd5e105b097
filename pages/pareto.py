"""Pareto: quality against cost for every finished run, with the frontier of runs that nothing
beats on both axes. Click a point to see its samples."""

import hashlib
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from litediff_core import pareto, reported, slides
from litediff_core.compress import STAGES
from pages import _shared as ui

# Cost axes: run-table column → (axis label with unit, scale to that unit, unit in hover text).
# Only columns the run table has (with at least one value) are offered: "image_ms" and
# "macs_total" come with runs measured per whole image.
AXES = {
    "params": ("Parameters (M)", 1e-6, "M params"),
    "bytes": ("Weights on disk (MiB, safetensors)", 1 / 2**20, "MiB"),
    "macs": ("MACs per image per UNet step (M)", 1e-6, "M MACs per step"),
    "latency_ms": ("Measured UNet step latency (ms per batch)", 1.0, "ms per step"),
    "image_ms": ("Measured time per image (ms, whole sampling)", 1.0, "ms per image"),
    "macs_total": ("MACs per image, all UNet steps (G)", 1e-9, "G MACs per image"),
}
# Quality axes: column → (label, higher is better, hover formatter)
METRICS = {
    "fid": ("FID (lower is better)", False, slides.fid_value),
    "kid": ("KID (lower is better)", False, lambda v: f"{v:.4f}"),
    "ssim_to_base": ("SSIM to the base model's samples (higher is better)", True,
                     lambda v: f"{v:.3f}"),
}
# Method families: colour and marker (each family distinct in both), legend label
FAMILIES = {
    "structured": ("structured pruning", "#1f77b4", "circle"),
    "unstructured": ("unstructured pruning", "#ff7f0e", "square"),
    "kd": ("knowledge distillation", "#2ca02c", "diamond"),
    "lora": ("LoRA", "#d62728", "triangle-up"),
    "low-rank": ("low rank", "#9467bd", "pentagon"),
    "quant": ("quantization", "#8c564b", "triangle-down"),
    "runtime": ("runtime (same model, other engine)", "#17becf", "x"),
    "sampling": ("sampling / time", "#e377c2", "star"),
    "dense": ("dense (base, fine-tuned)", "#3d3d3d", "hexagon"),
    "other": ("other", "#bcbd22", "cross"),
}
# each stage declares its family; fine-tuning alone leaves a model "dense"
STAGE_FAMILY = {name: cls.family for name, cls in STAGES.items() if cls.family in FAMILIES}
CUSTOM = ["ref", "hover"]


def family_of(method: str) -> str:
    """The family of a run's method string (``structured-prune(l1, 0.3) → finetune(400)``):
    that of its first compressing stage; fine-tuning alone and the base are "dense", or
    "sampling / time" when sampled otherwise (a `` · dpm-solver++ 10`` suffix)."""
    text, _, sampling = str(method or "").partition(" · ")  # " · dpm-solver++ 10": sampler
    stages = [part.strip().split("(")[0].strip() for part in text.split("→")]
    for stage in stages:
        if stage in STAGE_FAMILY:
            return STAGE_FAMILY[stage]
        if stage.startswith("quant"):
            return "quant"
        if any(w in stage for w in ("cache", "sampl", "step")):
            return "sampling"
    if all(stage in ("finetune", "base", "") or stage.startswith("base") for stage in stages):
        return "sampling" if sampling.strip() else "dense"
    return "other"


def shade(colour: str, t: float) -> str:
    """``colour`` mixed with white by ``t`` in [0, 1) (variants of one family)."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * t):02x}" for c in (r, g, b))


def axis_value(x: str, v) -> str:
    _, scale, unit = (list(AXES[x]) + [""])[:3]
    return f"{slides.sig(float(v) * scale)} {unit}".strip() if pd.notna(v) else "—"


def hover_texts(df: pd.DataFrame, x: str, y: str) -> list:
    ylabel, _, fmt = METRICS[y]
    out = []
    for _, r in df.iterrows():
        ci = ""
        if y == "fid" and pd.notna(r.get("fid_lo")) and pd.notna(r.get("fid_hi")):
            ci = f" [{fmt(r['fid_lo'])}, {fmt(r['fid_hi'])}]"
        batch = int(r["latency_batch"]) if pd.notna(r.get("latency_batch")) else "?"
        name = r["name"] if isinstance(r["name"], str) and r["name"] else r["id"]
        steps = r.get("train_steps")
        training = (f"recovery training: {int(steps):,} steps<br>"
                    if pd.notna(steps) and steps else "")
        out.append(f"<b>{name}</b><br>{r['method']}<br>"
                   f"<i>{FAMILIES[family_of(r['method'])][0]}</i><br>{training}"
                   f"{ylabel.split(' (')[0]}: {fmt(r[y])}{ci}<br>"
                   f"{AXES[x][0].split(' (')[0]}: {axis_value(x, r[x])}<br>"
                   f"eval: {r.get('eval', '')} · {r.get('extractor', '')} features<br>"
                   f"latency on {r.get('device', '')}, batch {batch}<br>run {r['ref']}")
    return out


def newest_ref(df: pd.DataFrame) -> str:
    """The run to ring when none is selected: your newest, else the newest shown."""
    for pool in (df[df["store"] == "yours"], df):
        pool = pool.dropna(subset=["created"])
        if not pool.empty:
            return pool.sort_values("created")["ref"].iloc[-1]
    return ""


def figure(df: pd.DataFrame, x: str, y: str, setup: str, ring: str = "",
           ring_label: str = "newest run") -> go.Figure:
    xlabel, scale = AXES[x][0], AXES[x][1]
    ylabel, higher, _ = METRICS[y]
    df = df.assign(hover=hover_texts(df, x, y), family=df["method"].map(family_of))
    keep = ["ref", "hover", "name", "id", "method", "family", x, y, "fid", "fid_lo", "fid_hi"]
    df = df[list(dict.fromkeys(c for c in keep if c in df.columns))]  # narrow: fast to slice
    # the traces are plain dicts given to go.Figure once: validated in one pass, 5× faster
    # than 57 add_scatter calls (0.09 s against 0.5 s for the shipped runs)
    traces, annotations = [], []
    for fam, (label, colour, symbol) in FAMILIES.items():
        group = df[df["family"] == fam]
        variants = sorted(group["method"].fillna("").unique())
        for k, method in enumerate(variants):
            g = group[group["method"].fillna("") == method]
            c = shade(colour, 0.55 * k / max(len(variants) - 1, 1)) if k else colour
            error = None
            if y == "fid" and g["fid_lo"].notna().any():
                error = {"type": "data", "symmetric": False,
                         "array": (g["fid_hi"] - g["fid"]).to_numpy(float),
                         "arrayminus": (g["fid"] - g["fid_lo"]).to_numpy(float),
                         "thickness": 1, "color": c}
            traces.append(dict(type="scatter", x=g[x].to_numpy(float) * scale,
                               y=g[y].to_numpy(float), mode="markers", name=method or "?",
                               legendgroup=fam, legendgrouptitle_text=label, error_y=error,
                               marker={"size": 12, "color": c, "symbol": symbol,
                                       "line": {"color": "white", "width": 1}},
                               customdata=g[CUSTOM].values,
                               hovertemplate="%{customdata[1]}<extra></extra>"))
    front = df[pareto.pareto_front(df, x, y, higher)].sort_values(x)
    if len(front):
        names = [str(n or i)[:22] + ("…" if len(str(n or i)) > 22 else "")
                 for n, i in zip(front["name"], front["id"])]
        # invisible markers of the points' size keep the run names off the points
        traces.append(dict(type="scatter", x=front[x] * scale, y=front[y],
                           mode="lines+markers+text", name="Pareto frontier",
                           legendgroup="frontier", legendgrouptitle_text="frontier",
                           line={"dash": "dash", "color": "gray"},
                           marker={"size": 16, "color": "rgba(0,0,0,0)"}, text=names,
                           textposition=[("bottom " if higher else "top ") +
                                         ("left" if i == len(front) - 1 and i else "right")
                                         for i in range(len(front))],
                           textfont={"size": 10, "color": "#555555"}, hoverinfo="skip"))
        mid = len(front) // 2
        a, b = front.iloc[max(mid - 1, 0)], front.iloc[mid]
        annotations.append(dict(x=(a[x] + b[x]) / 2 * scale, y=(a[y] + b[y]) / 2,
                                text="<i>Pareto frontier</i>", showarrow=False,
                                yshift=-14 if higher else 14, xshift=30,
                                font={"color": "gray", "size": 12}))
    ringed = df[df["ref"] == ring]
    if len(ringed):
        traces.append(dict(type="scatter", x=ringed[x] * scale, y=ringed[y], mode="markers",
                           name=ring_label, legendgroup="ring", legendgrouptitle_text="highlight",
                           marker={"size": 26, "symbol": "circle-open", "color": "black",
                                   "line": {"width": 3, "color": "black"}},
                           customdata=ringed[CUSTOM].values,
                           hovertemplate=f"{ring_label}<br>%{{customdata[1]}}<extra></extra>"))
    fig = go.Figure(data=traces, layout=dict(
        title={"text": f"{ylabel.split(' (')[0]} vs {xlabel.split(' (')[0]}"
                       f"<br><sup>{setup}</sup>"},
        xaxis_title=xlabel, yaxis_title=ylabel, height=640, legend_title="method",
        legend={"groupclick": "toggleitem", "tracegroupgap": 6, "font": {"size": 11}},
        template="plotly_white", clickmode="event+select", annotations=annotations))
    return fig


@st.cache_resource(show_spinner=False, max_entries=16)
def shared_figure(df: pd.DataFrame, x: str, y: str, setup: str, ring: str,
                  ring_label: str) -> go.Figure:
    """:func:`figure`, built once per input for every session (building and validating 60
    traces costs 0.3 s of a 2-core machine's page run). Shared: never change it in place."""
    return figure(df, x, y, setup, ring=ring, ring_label=ring_label)


REPORTED = "reported: Inception FID, other setup"


def overlay_reported(fig: go.Figure, x: str, y: str, datasets) -> go.Figure:
    """The seed papers' CIFAR-10 numbers (``litediff_core/reported_points.csv``), on request and
    only over runs of a CIFAR-10 base (``datasets``: the shown runs'), as markers of their own:
    never part of the frontier (computed from the runs alone) and not clickable. Returns a new
    figure when it overlays (``fig`` is left as it is), else ``fig``."""
    points = reported.reported_points()
    if points.empty:
        st.caption("No reported points from the seed papers are overlaid: none could be "
                   "verified from the papers' text here, and numbers are never invented.")
        return fig
    mismatch = reported.reported_mismatch(datasets)
    if mismatch:
        st.caption(mismatch)
        return fig
    rows = reported.reported_on_axis(points, x, y, AXES[x][1])
    if rows.empty:
        st.caption(f"The seed papers report no {METRICS[y][0].split(' (')[0]} against "
                   f"{AXES[x][0].split(' (')[0]}: reported points exist for FID vs parameters, "
                   f"MACs per step and weights on disk.")
        return fig
    if st.checkbox(f"Overlay the seed papers' reported points ({len(rows)}; Inception FID, "
                   f"other setup: not comparable with these runs' FIDs)", key="pa_reported"):
        fig = go.Figure(fig)
        fig.add_scatter(x=rows["x"], y=rows["y"], mode="markers", name=REPORTED,
                        legendgroup="reported", legendgrouptitle_text="seed papers",
                        marker={"symbol": "x-thin", "size": 10, "color": "#555555",
                                "line": {"width": 2, "color": "#555555"}},
                        hovertext=rows["hover"], hovertemplate="%{hovertext}<extra></extra>")
    return fig


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


def fid_setups(runs: pd.DataFrame) -> pd.Series:
    """'1000 samples, litediff-fmnist-cnn-v1 features' per run: what makes FIDs comparable."""
    samples = runs["n"].map(lambda n: "?" if pd.isna(n) else str(int(n)))
    return samples + " samples, " + runs["extractor"].fillna("?") + " features"


def main() -> None:
    st.title("Pareto")
    table = ui.runs_table()
    ui.no_cached_results_info(table)
    done = table[table["status"] == "done"]
    if done.empty:
        st.info("No finished runs yet: run recipes on the Compress page (or regenerate the "
                f"cached results with {ui.REGENERATE_HINT}).")
        return
    axes = [k for k in AXES if k in done.columns and done[k].notna().any()]
    c = st.columns(2)
    y = c[0].selectbox("Quality (y)", list(METRICS), format_func=lambda k: METRICS[k][0],
                       key="pa_y")
    x = c[1].selectbox("Cost (x)", axes, format_func=lambda k: AXES[k][0], key="pa_x")
    # FIDs compare at equal sample count and features; the sampler and its steps are part of
    # each run's method (fewer steps are a compression too), named on every point
    done = done.assign(fid_setup=fid_setups(done))
    setups = sorted(done["fid_setup"].dropna().unique())
    if len(setups) > 1:
        # the setup with the most samples (the default evaluation, where the recovered runs
        # are), then most runs; and that of your newest run (so a new run shows at once)
        counts = done["fid_setup"].value_counts()
        n = done.groupby("fid_setup")["n"].max()
        default = [max(counts.index, key=lambda s: (n[s], counts[s]))]
        own = done[done["store"] == "yours"].dropna(subset=["fid_setup"])
        if not own.empty:
            newest = own.sort_values("created")["fid_setup"].iloc[-1]
            default += [newest] if newest not in default else []
        chosen = st.multiselect("Evaluation setups", setups, default=default, key="pa_setups",
                                help="FIDs are comparable at equal sample count and features; "
                                     "each point's sampler and steps are in its label")
        if len(chosen) > 1:
            st.warning("The points come from different evaluation setups (sample count or "
                       "features): FID depends on both, compare within one setup.")
        done = done[done["fid_setup"].isin(chosen)]
    df = done.dropna(subset=[x, y])
    if df.empty:
        st.info(f"No finished run has both {METRICS[y][0]} and {AXES[x][0]}.")
        return
    setup = " | ".join(sorted(set(
        f"FID on {r['fid_setup']}, latency on {r['device']} batch "
        f"{int(r['latency_batch']) if pd.notna(r['latency_batch']) else '?'}"
        for _, r in df.iterrows())))
    picked = selected_ref(st.session_state.get("pa_chart"))
    picked = picked if picked in set(df["ref"]) else ""
    ring = picked or newest_ref(df)
    fig = shared_figure(df, x, y, setup, ring, "selected run" if picked else "newest run")
    fig = overlay_reported(fig, x, y, df["dataset"])
    event = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key="pa_chart",
                            **ui.CHART)
    st.caption(f"One point per finished run ({len(df)}): colour and marker by method family, "
               f"shades for its variants (click a legend entry to hide it); the dashed line "
               f"joins the runs no other run beats on both axes"
               f"{'; FID error bars: bootstrap 95% interval' if y == 'fid' else ''}; the "
               f"ringed point is the {'selected' if picked else 'newest'} run. Setup: {setup}. "
               f"Click a point to see its samples.")

    export(fig, df, x, y)

    ref = selected_ref(event) or picked
    if ref:
        row = df.set_index("ref").loc[ref] if ref in set(df["ref"]) else None
        if row is not None:
            st.subheader(f"Selected: {row['name']}")
            cols = st.columns([2, 3])
            grid = Path(row["path"]) / "samples.png"
            if grid.exists():
                cols[0].image(str(grid), caption=f"samples — {row['eval']}", width="stretch")
            shown = [c for c in ["method", "params", "macs", "bytes", "latency_ms", "speedup",
                                 "image_ms", "image_speedup", "macs_total", "fid", "fid_lo",
                                 "fid_hi", "kid", "ssim_to_base", "eval", "extractor",
                                 "device"] if c in row.index]
            one = slides.slide_table(row[shown].to_frame().T.reset_index(drop=True), shown)
            cols[1].dataframe(one.T.rename(columns={0: "value"}))
            st.session_state["layers_focus"] = ref
            cols[1].page_link("pages/layers.py", label="Open this run on the Layers page",
                              icon=":material/view_module:")


def export(fig: go.Figure, df: pd.DataFrame, x: str, y: str) -> None:
    c = st.columns(2)
    cols = ["ref", "name", "method", x, y] + (["fid_lo", "fid_hi"] if y == "fid" else []) + [
        "eval", "extractor", "device", "latency_batch"]
    points = df[cols].to_csv(index=False)
    c[0].download_button("Download points (CSV)", points,
                         f"pareto-{y}-vs-{x}.csv", "text/csv", key="pa_csv")
    c[1].download_button("Download figure (interactive HTML)",
                         lambda: fig.to_html(include_plotlyjs=True),
                         f"pareto-{y}-vs-{x}.html", "text/html", key="pa_html")
    # PNG and SVG through kaleido, which drives a local Chrome/Chromium: made on request
    # (a few seconds), with the figure's own colours, markers and legend
    # images made for this very figure: its points, highlight and overlay (not its JSON, whose
    # serialisation would cost 0.1 s every run)
    shown = (points, tuple(t.name for t in fig.data), [t.x for t in fig.data if t.name ==
                                                       REPORTED or t.legendgroup == "ring"])
    want = (x, y, hashlib.sha256(repr(shown).encode()).hexdigest())
    if c[0].button("Make PNG and SVG of the figure", key="pa_png_make"):
        try:
            st.session_state["pa_png_bytes"] = (want, figure_image(fig, "png"))
            st.session_state["pa_svg_bytes"] = (want, figure_image(fig, "svg"))
        except Exception as e:  # kaleido missing, or no Chrome/Chromium on this machine
            st.session_state["pa_png_bytes"] = st.session_state["pa_svg_bytes"] = (want, None)
            c[0].warning(f"PNG export needs `kaleido` and a Chrome or Chromium browser "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160]}). The HTML file "
                         f"opens in any browser and its camera icon saves a PNG.")
    for kind, mime, col in (("png", "image/png", c[0]), ("svg", "image/svg+xml", c[1])):
        made = st.session_state.get(f"pa_{kind}_bytes")
        if made and made[0] == want and made[1]:
            col.download_button(f"Download figure ({kind.upper()})", made[1],
                                f"pareto-{y}-vs-{x}.{kind}", mime, key=f"pa_{kind}")


def figure_image(fig: go.Figure, kind: str) -> bytes:
    """The figure as PNG (2× scale) or SVG, 1400 px wide, as it is drawn here (colours,
    markers, legend groups) on a white background; tall enough for the whole legend."""
    entries = sum(1 for t in fig.data if t.showlegend is not False)
    groups = len({t.legendgroup for t in fig.data})
    height = max(700, 140 + 20 * entries + 34 * groups)
    return fig.to_image(format=kind, width=1400, height=height,
                        scale=2 if kind == "png" else 1)


main()
