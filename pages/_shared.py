"""What several dashboard pages share: cached model loaders, the job registry, the run stores
and small table-shaping helpers (no measurement happens here; numbers come from
``litediff_core``).

Module-level objects hold no session state: caches live in ``st.cache_resource`` /
``st.cache_data`` (shared by every session of the server), the rest is plain functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import pandas as pd
import streamlit as st

from litediff_core.results import Fidelity, Latency, RunResult
from litediff_core.runs import RunStore
from pages._warm_up import imports_done

REPO = Path(__file__).resolve().parent.parent
CACHED_ENV = "LITEDIFF_CACHED_RESULTS"  # tests point it elsewhere; default <repo>/cached_results
REGENERATE_HINT = ("`python benchmarks/sweep.py --store cached_results` (or run recipes on the "
                   "Compress page: they land in your own run store)")

# The Pareto page's axes and metrics live at the top of pages/pareto.py (one dict each).

# How every page draws a plotly figure: in its own template (plotly_white, set by the figure, as
# its PNG export looks), not restyled by Streamlit's theme, which costs ~0.1 s of drawing per
# chart on 2 cores (measured: Pareto page 1.03 against 1.09 s per switch)
CHART = {"theme": None}


# ----------------------------------------------------------------------------- cached loaders

@st.cache_resource(show_spinner="Loading model…")
def load_model(source: str, stamp: float = 0.0):
    """Shared by every session: deep-copy before compressing (never mutate it in place).
    ``stamp`` (e.g. a run folder's mtime) only makes the cache key change with the files."""
    imports_done()  # the server's warm-up may be importing diffusers right now
    from litediff_core.models import load_base

    return load_base(source)


@st.cache_data(show_spinner="Reading the dataset…")
def dataset_shape(name: str) -> tuple:
    """(channels, resolution) of a dataset's images."""
    imports_done()
    from litediff_core.data import load_dataset

    data = load_dataset(name, "test")
    return data.channels, data.resolution


@st.cache_data(show_spinner="Measuring size and MACs…")
def size_of(source: str) -> dict:
    from litediff_core.metrics import size_report

    return size_report(load_model(source).unet)


@st.cache_resource
def job_registry():
    """The one background-job registry of this server process (shared by all sessions). Runs
    execute one at a time, so that their latency measurements do not compete for the CPU."""
    from litediff_core.jobs import JobRegistry

    return JobRegistry(max_running=1)


def live_snapshot(job_id: str) -> Optional[dict]:
    """A job's progress snapshot for a polling fragment (None for an unknown job); once the
    job has ended (its run is stored, or failed) the whole page reruns to show the result."""
    snap = job_registry().snapshot(job_id)
    if snap is not None and snap["state"] not in ("queued", "running"):
        st.rerun()
    return snap


def submit_run(recipe, device: str = "auto", force: bool = False) -> str:
    """Run ``recipe`` into the user store as a background job of :func:`job_registry` (a job of
    the same recipe key still queued or running is reused); the job id. The Compress page
    follows the job under session key ``cp_job``."""
    from litediff_core.runs import run_recipe

    imports_done()  # the job imports torch and diffusers in its own thread

    return job_registry().start(run_recipe, recipe, user_store(), device=device, force=force,
                                label=recipe.name, key=recipe.key())


# ----------------------------------------------------------------------------- run stores

def cached_results_dir() -> Path:
    return Path(os.environ.get(CACHED_ENV) or REPO / "cached_results")


def stores() -> List[Tuple[str, RunStore]]:
    """(label, store): the repository's read-only precomputed runs, then the user's own."""
    return [("cached", RunStore(cached_results_dir())), ("yours", RunStore())]


def user_store() -> RunStore:
    return RunStore()


def _setup_of(result: RunResult, recipe: dict) -> dict:
    fid, lat = result.fidelity or Fidelity(), result.latency or Latency()
    return {"extractor": fid.extractor or "", "device": lat.device or "",
            "latency_batch": lat.batch_size, "base": recipe.get("base", ""),
            "dataset": result.dataset or recipe.get("dataset") or ""}


def runs_table() -> pd.DataFrame:
    """Every run of every store: ``RunStore.table()`` columns plus store, ref (store:id), path,
    and the measurement setup (extractor, device, latency_batch, base, dataset). Read again
    only when a store's files change (``RunStore.stamp``)."""
    return _runs_table(tuple(store.stamp() for _, store in stores()))


@st.cache_data(show_spinner=False, max_entries=8)
def _runs_table(stamps: tuple) -> pd.DataFrame:
    frames = []
    for label, store in stores():
        records = store.records()  # each run read once, for its row and its setup
        t = store.table(records)
        if t.empty:
            continue
        t.insert(0, "store", label)
        t.insert(1, "ref", [f"{label}:{i}" for i in t["id"]])
        t["path"] = [str(store.root / i) for i in t["id"]]
        setups = [_setup_of(run["result"], run["recipe"]) for _, run, _ in records]
        frames.append(pd.concat([t.reset_index(drop=True), pd.DataFrame(setups)], axis=1))
    if not frames:
        from litediff_core.runs import COLUMNS

        return pd.DataFrame(columns=["store", "ref", *COLUMNS, "path", "extractor", "device",
                                     "latency_batch", "base", "dataset"])
    return pd.concat(frames, ignore_index=True)


def resolve(ref: str) -> Tuple[RunStore, str]:
    """The store and id of a ``store:id`` reference."""
    label, _, run_id = ref.partition(":")
    for name, store in stores():
        if name == label:
            return store, run_id
    raise KeyError(ref)


def run_label(row) -> str:
    return f"{row['name']} · {row['id']} ({row['store']}, {row['status']})"


def run_choices(table: pd.DataFrame, need: Optional[str] = None) -> dict:
    """{ref: label} of the runs in ``table`` whose folder holds ``need`` (a file or folder)."""
    out = {}
    for _, row in table.iterrows():
        if need is None or (Path(row["path"]) / need).exists():
            out[row["ref"]] = run_label(row)
    return out


def no_cached_results_info(table: pd.DataFrame) -> None:
    """The honest note shown while the repository ships no precomputed runs."""
    if not (table["store"] == "cached").any():
        st.info(f"No cached results yet in `{cached_results_dir()}`; regenerate them with "
                f"{REGENERATE_HINT}. Only runs from your own store are shown.")


# ----------------------------------------------------------------------------- shaping helpers

def fmt(value, kind: str) -> str:
    """Human units: params (M), bytes (MiB), macs (M), ms, ratio, plain."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if kind == "params":
        return f"{value / 1e6:.3f} M"
    if kind == "bytes":
        return f"{value / 2**20:.2f} MiB"
    if kind == "macs":
        return f"{value / 1e6:.1f} M"
    if kind == "ms":
        return f"{value:.1f} ms"
    if kind == "x":
        return f"{value:.2f}×"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
