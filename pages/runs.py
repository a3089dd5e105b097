"""Runs: the table of every stored run (filter, sort, export), side-by-side comparison of two
runs, deletion (own runs only, after a confirmation) and download of a compressed model."""

from numbers import Number
from pathlib import Path

import numpy as np

import pandas as pd
import streamlit as st

from litediff_core import fileio, slides
from litediff_core.errors import LiteDiffError
from pages import _shared as ui

# the table's columns (those the run table has: image_ms, image_speedup and macs_total come
# with runs measured per image)
SHOWN = ["store", "id", "name", "method", "status", "params", "nonzero_params", "bytes", "macs",
         "latency_ms", "speedup", "image_ms", "image_speedup", "macs_total", "fid", "fid_lo",
         "fid_hi", "kid", "ssim_to_base", "psnr_to_base", "gate", "train_steps", "wall_s",
         "eval", "extractor", "device", "created", "error"]
EXPORTS = {"slide": "slide columns: name, params, size, MACs, speed-up, FID [95% CI], SSIM",
           "all": "all columns"}
COLUMN_CONFIG = {
    "params": st.column_config.NumberColumn("params", help="parameters", format="%d"),
    "nonzero_params": st.column_config.NumberColumn("non-zero params", format="%d"),
    "bytes": st.column_config.NumberColumn("bytes", help="safetensors size in bytes",
                                           format="%d"),
    "macs": st.column_config.NumberColumn("MACs", help="per image per UNet step", format="%d"),
    "latency_ms": st.column_config.NumberColumn("latency (ms)", help="median UNet step, "
                                                "measured at the run's latency batch",
                                                format="%.2f"),
    "speedup": st.column_config.NumberColumn("speed-up", help="base latency / this latency, "
                                             "measured in the same run", format="%.2f×"),
    "image_ms": st.column_config.NumberColumn("time per image (ms)", format="%.1f",
                                              help="whole image at the run's own sampling"),
    "image_speedup": st.column_config.NumberColumn(
        "speed-up per image", format="%.2f×",
        help="against the dense base at DDIM 50 steps, whole images"),
    "macs_total": st.column_config.NumberColumn("MACs per image", format="%.3e",
                                                help="all UNet calls of one image"),
    "fid": st.column_config.NumberColumn("FID", format="%.2f"),
    "created": st.column_config.DatetimeColumn("finished"),
}
COMPARED = [("params", "params"), ("nonzero_params", "params"), ("bytes", "bytes"),
            ("macs", "macs"), ("latency_ms", "ms"), ("speedup", "x"), ("image_ms", "ms"),
            ("image_speedup", "x"), ("fid", ""),
            ("fid_lo", ""), ("fid_hi", ""), ("kid", ""), ("ssim_to_base", ""),
            ("psnr_to_base", ""), ("gate", ""), ("train_steps", ""), ("wall_s", ""),
            ("eval", ""), ("extractor", ""), ("device", "")]


def shown(table: pd.DataFrame) -> list:
    return [c for c in SHOWN if c in table.columns]


def filtered(table: pd.DataFrame) -> pd.DataFrame:
    c = st.columns([3, 2, 2, 1])
    text = c[0].text_input("Filter", key="rn_filter", placeholder="name, method or id contains…")
    statuses = sorted(table["status"].dropna().unique())
    chosen = c[1].multiselect("Status", statuses, default=statuses, key="rn_status")
    cols = shown(table)
    sort_by = c[2].selectbox("Sort by", cols, index=cols.index("created"), key="rn_sort")
    ascending = c[3].toggle("Ascending", value=False, key="rn_asc")
    df = table[table["status"].isin(chosen)]
    if text.strip():
        needle = text.strip().lower()
        hay = (df["name"].fillna("") + " " + df["method"].fillna("") + " " + df["id"] + " "
               + df["store"]).str.lower()
        df = df[hay.str.contains(needle, regex=False)]
    return df.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")


def export(df: pd.DataFrame) -> None:
    """The shown runs as tables for slides (``litediff_core.slides``: formatted numbers, units
    in the headers) in Markdown and LaTeX; CSV keeps the raw numbers of the same columns."""
    st.markdown("**Export the shown runs**")
    which = st.radio("Columns", list(EXPORTS), format_func=EXPORTS.get, horizontal=True,
                     key="rn_export_cols")
    if which == "slide":  # a comparison slide shows finished runs only
        left_out = int((df["status"] != "done").sum())
        df = df[df["status"] == "done"]
        if left_out:
            st.caption(f"{left_out} unfinished run(s) (failed, interrupted…) left out of the "
                       f"slide table; 'all columns' keeps every shown run.")
    table, note = slides.slide_table(df, which), slides.setup_note(df)
    raw_cols = [c for col in slides.columns_for(df, which)
                for c in (("fid", "fid_lo", "fid_hi") if col == slides.FID_CI else (col,))
                if c in df.columns]
    raw = df[raw_cols if which == "slide" else shown(df)].copy()
    if "created" in raw.columns:
        raw["created"] = pd.to_datetime(raw["created"], unit="s", errors="coerce")
    md, tex = slides.markdown(table, note), slides.latex(table, note)
    c = st.columns(4)
    c[0].download_button("CSV", raw.to_csv(index=False), "runs.csv", "text/csv", key="rn_csv",
                         help="raw numbers (params, bytes, MACs as counts)")
    c[1].download_button("Markdown", md, "runs.md", "text/markdown", key="rn_md")
    c[2].download_button("LaTeX", tex, "runs.tex", "text/x-tex", key="rn_tex",
                         help="a tabular to paste into a slide: every special character "
                              "escaped, no package needed")
    c[3].download_button("LaTeX document", slides.latex_document(tex), "runs-table.tex",
                         "text/x-tex", key="rn_tex_doc",
                         help="the same table in a standalone document: pdflatex compiles it")
    preview = st.expander("Preview of the exported table", key="rn_preview", on_change="rerun")
    if preview.open:  # drawn when opened: a table of every run
        preview.markdown(md)


def _ask_delete(ref: str):
    st.session_state["rn_confirm"] = ref


def _cancel_delete():
    st.session_state.pop("rn_confirm", None)


def _delete(ref: str):
    store, run_id = ui.resolve(ref)
    try:
        store.delete(run_id)
        st.session_state["rn_deleted"] = run_id
    except LiteDiffError as e:
        st.session_state["rn_delete_error"] = str(e)
    st.session_state.pop("rn_confirm", None)


def delete_section(table: pd.DataFrame) -> None:
    st.subheader("Delete a run")
    if "rn_deleted" in st.session_state:
        st.success(f"Deleted run {st.session_state.pop('rn_deleted')}.")
    if "rn_delete_error" in st.session_state:
        st.error(st.session_state.pop("rn_delete_error"))
    own = ui.run_choices(table[table["store"] == "yours"])
    if not own:
        st.caption("Only runs of your own store can be deleted; the cached results are "
                   "read-only.")
        return
    ref = st.selectbox("Run to delete", list(own), format_func=own.get, key="rn_del_pick")
    pending = st.session_state.get("rn_confirm")
    if pending is None:
        st.button("Delete…", key="rn_del", on_click=_ask_delete, args=(ref,))
        return
    st.warning(f"Delete {own.get(pending, pending)} for good? Its folder (model, samples, "
               f"metrics) is removed.")
    c = st.columns(6)
    c[0].button("Yes, delete", key="rn_del_yes", type="primary", on_click=_delete,
                args=(pending,))
    c[1].button("Keep it", key="rn_del_no", on_click=_cancel_delete)


def compare_section(table: pd.DataFrame) -> None:
    st.subheader("Compare two runs")
    choices = ui.run_choices(table)
    if len(choices) < 2:
        st.caption("Needs at least two runs.")
        return
    refs = list(choices)
    c = st.columns(2)
    a = c[0].selectbox("Run A", refs, format_func=choices.get, key="rn_a")
    b = c[1].selectbox("Run B", refs, index=1, format_func=choices.get, key="rn_b")
    rows = table.set_index("ref")
    ra, rb = rows.loc[a], rows.loc[b]
    out = []
    for col, kind in COMPARED:
        if col not in rows.columns:
            continue
        va, vb = ra[col], rb[col]
        numeric = all(isinstance(v, Number) and not isinstance(v, (bool, np.bool_))
                      and pd.notna(v) for v in (va, vb))
        out.append({"metric": col, "A": ui.fmt(va, kind), "B": ui.fmt(vb, kind),
                    "B − A": ui.fmt(vb - va, kind) if numeric else "",
                    "B / A": f"{vb / va:.3f}" if numeric and va else ""})
    st.dataframe(pd.DataFrame(out), hide_index=True)
    st.caption(f"A: {ra['name']} ({ra['method']}); B: {rb['name']} ({rb['method']}). Latency "
               f"and speed-up are measured per run on its own device; compare FID only between "
               f"runs with the same eval setup.")


def download_section(table: pd.DataFrame) -> None:
    st.subheader("Download a compressed model")
    choices = ui.run_choices(table[table["status"] == "done"], need="model")
    if not choices:
        st.caption("No finished run with a saved model yet.")
        return
    ref = st.selectbox("Run", list(choices), format_func=choices.get, key="rn_model")
    store, run_id = ui.resolve(ref)
    folder = store.root / run_id / "model"
    size = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    st.download_button(f"Download model/ as zip ({size / 2**20:.1f} MiB before compression)",
                       lambda: fileio.zip_folder(folder), f"litediff-{run_id}-model.zip",
                       "application/zip", key="rn_zip")
    st.caption("Load it again with `litediff` / `load_base('<unzipped>/model')`.")


def running_jobs() -> None:
    running = ui.job_registry().running()
    if running:
        st.caption("In progress on this server (listed once finished):")
        for s in running:
            st.progress(s["fraction"], text=f"{s['label']} — {s['message']}")


def main() -> None:
    st.title("Runs")
    table = ui.runs_table()
    ui.no_cached_results_info(table)
    running_jobs()
    if table.empty:
        st.info("No runs stored yet: run a recipe on the Compress page.")
        return
    df = filtered(table)
    st.caption(f"{len(df)} of {len(table)} runs · sizes in parameters / bytes / MACs per image "
               f"per UNet step; latency in ms per UNet step at each run's latency batch.")
    st.dataframe(df[shown(df)].assign(created=pd.to_datetime(df["created"], unit="s",
                                                             errors="coerce")),
                 hide_index=True, column_config=COLUMN_CONFIG, key="rn_table")
    export(df)
    compare_section(table)
    download_section(table)
    delete_section(table)


main()
