"""Recovery: how a compressed model's quality comes back while it trains — the recovery curves
stored with runs whose training stage set ``curve_every`` (and those of unfinished runs, read
from their checkpoints), against fine-tune steps or training time, several runs overlaid."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from litediff_core.curves import curves_stamp, points_frame, recovery_curves, trained_on
from pages import _shared as ui

X_AXES = {"step": ("fine-tune steps", 1.0),
          "train_min": ("training time (minutes on the machine that trained it, evaluation "
                        "excluded)", 1.0)}
Y_AXES = {"fid": "FID (lower is better)",
          "eps_mse_teacher": "ε-MSE to the dense teacher (lower: closer to it)"}
HOW = ("Add a recovery curve to any training stage (finetune, distill, lora) with "
       "`curve_every: K` in the recipe (or the *recovery curve* options on the Compress page): "
       "the model is evaluated at step 0, every K steps and at the end.")


@st.cache_data(show_spinner=False)
def curves_of(stamps: tuple) -> list:
    """Every store's curves (``stamps``: the stores' change times, so a new run shows)."""
    out = []
    for label, store in ui.stores():
        out += recovery_curves(store, label)
    return out


def figure(curves: list, x: str, y: str, title: str, log: bool = False) -> go.Figure:
    fig = go.Figure()
    refs, xs = {}, []
    for c in curves:
        df = points_frame([c])
        xs += df[x].tolist()
        error = None
        if y == "fid" and df["fid_lo"].notna().any():
            error = {"type": "data", "symmetric": False, "thickness": 1,
                     "array": (df["fid_hi"] - df["fid"]).tolist(),
                     "arrayminus": (df["fid"] - df["fid_lo"]).tolist()}
        name = f"{c['run']} ({c['stage']})" + ("" if c["status"] == "done"
                                                else f" — {c['status']}")
        fig.add_scatter(x=df[x].tolist(), y=df[y].tolist(), mode="lines+markers", name=name,
                        error_y=error,
                        customdata=df[["step", "train_min", "machine"]].values.tolist(),
                        hovertemplate=f"{name}<br>step %{{customdata[0]}} · "
                                      f"%{{customdata[1]:.1f}} min on %{{customdata[2]}}<br>"
                                      f"{Y_AXES[y]}: %{{y:.4g}}<extra></extra>")
        ref = c.get("reference")
        if ref and ref.get(y) is not None:
            # one line per value as shown (runs timed on two CPUs differ in the 5th digit)
            refs.setdefault(f"{ref[y]:.3g}", ref[y])
    for shown, value in refs.items():  # the dense teacher at the same setup: the curve's goal
        fig.add_scatter(x=[min(xs), max(xs)], y=[value, value], mode="lines",
                        name=f"dense base, same setup ({shown})", hoverinfo="skip",
                        line={"dash": "dash", "color": "grey"})
    fig.update_layout(title=title, height=460, xaxis_title=X_AXES[x][0], yaxis_title=Y_AXES[y],
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 60}, showlegend=True,
                      yaxis_type="log" if log else "linear", template="plotly_white")
    return fig


def summary(curves: list) -> pd.DataFrame:
    rows = []
    for c in curves:
        first, last = c["points"][0], c["points"][-1]
        ref = c.get("reference") or {}
        rows.append({"run": c["run"], "stage": c["stage"], "status": c["status"],
                     "steps": last["step"], "training (min)": round(last["train_s"] / 60, 1),
                     "trained on": ", ".join(trained_on(c)),
                     "FID at start": round(first["fid"], 1), "FID now": round(last["fid"], 1),
                     "dense base (same setup)": round(ref["fid"], 1) if ref.get("fid") else None,
                     "ε-MSE to teacher": (f"{first.get('eps_mse_teacher', float('nan')):.4f} → "
                                          f"{last.get('eps_mse_teacher', float('nan')):.4f}")})
    return pd.DataFrame(rows)


def main():
    st.title("Recovery")
    st.caption("A pruned, factorised or newly built student loses quality; training it again "
               "brings it back. These curves show how fast — in steps and in minutes — so a "
               "compressed model is never judged on a budget too small for it.")
    table = ui.runs_table()
    ui.no_cached_results_info(table)
    stamps = tuple(curves_stamp(store) for _, store in ui.stores())
    curves = curves_of(stamps)
    if not curves:
        st.info("No run has a recovery curve yet. " + HOW)
        return
    labels = sorted({c["label"] for c in curves})
    setup = curves[-1]["label"]  # the newest run's (your store comes after the shipped one)
    if len(labels) > 1:  # curves of different setups are never drawn on one axis
        setup = st.selectbox("Curve setup", labels, index=labels.index(setup), key="rc_setup",
                             help="FIDs of different sample counts or samplers do not compare")
    same = [c for c in curves if c["label"] == setup]
    options = {f"{c['ref']}|{c['stage']}": f"{c['run']} ({c['stage']}, {c['status']})"
               for c in same}
    chosen = st.multiselect("Runs", list(options), default=list(options)[-4:],
                            format_func=options.get, key="rc_runs")
    c1, c2, c3 = st.columns([2, 2, 1])
    x = c1.radio("Against", list(X_AXES), format_func=lambda k: X_AXES[k][0].split(" (")[0],
                 horizontal=True, key="rc_x")
    y = c2.radio("Quality", list(Y_AXES), format_func=lambda k: Y_AXES[k].split(" (")[0],
                 horizontal=True, key="rc_y")
    log = c3.checkbox("log scale", value=True, key="rc_log",
                      help="a freshly pruned model starts far off: a log axis keeps the rest of "
                           "the curve readable")
    shown = [c for c in same if f"{c['ref']}|{c['stage']}" in chosen]
    if not shown:
        st.info("Pick one or more runs above.")
        return
    st.plotly_chart(figure(shown, x, y, setup, log), width="stretch", key="rc_chart",
                    **ui.CHART)
    st.caption(f"{setup}. Curve FIDs use few samples and a fast sampler: compare points of "
               "these curves with each other, never with a run's final FID (Runs and Pareto "
               "pages: more samples, its own sampler). Error bars: 95 % bootstrap interval.")
    machines = {m for c in shown for m in trained_on(c)}
    if x == "train_min" and len(machines) > 1:
        st.warning(f"These runs trained on {len(machines)} different machines "
                   f"({', '.join(sorted(machines))}): their minutes do not compare directly; "
                   "steps do.")
    st.dataframe(summary(shown), hide_index=True, width="stretch")
    st.caption(HOW)


main()
