"""What several dashboard pages share: cached model loaders, the job registry, the run stores
and small table-shaping helpers (no measurement happens here; numbers come from
``litediff_core``).

Module-level objects hold no session state: caches live in ``st.cache_resource`` /
``st.cache_data`` (shared by every session of the server), the rest is plain functions.
"""

from __future__ import annotations

import io
import json
import os
import textwrap
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple

import pandas as pd
import streamlit as st

from litediff_core.runs import RunStore

REPO = Path(__file__).resolve().parent.parent
CACHED_ENV = "LITEDIFF_CACHED_RESULTS"  # tests point it elsewhere; default <repo>/cached_results
REGENERATE_HINT = ("`python benchmarks/sweep.py --store cached_results` (or run recipes on the "
                   "Compress page: they land in your own run store)")

# The Pareto page's axes and metrics live at the top of pages/pareto.py (one dict each).


# ----------------------------------------------------------------------------- cached loaders

@st.cache_resource(show_spinner="Loading model…")
def load_model(source: str, stamp: float = 0.0):
    """Shared by every session: deep-copy before compressing (never mutate it in place).
    ``stamp`` (e.g. a run folder's mtime) only makes the cache key change with the files."""
    from litediff_core.models import load_base

    return load_base(source)


@st.cache_data(show_spinner="Reading the dataset…")
def dataset_shape(name: str) -> tuple:
    """(channels, resolution) of a dataset's images."""
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


def submit_run(recipe, device: str = "auto", force: bool = False) -> str:
    """Run ``recipe`` into the user store as a background job of :func:`job_registry` (a job of
    the same recipe key still queued or running is reused); the job id. The Compress page
    follows the job under session key ``cp_job``."""
    from litediff_core.runs import run_recipe

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


def _setup_of(metrics: dict, recipe: dict) -> dict:
    fid, lat = metrics.get("fidelity", {}), metrics.get("latency", {})
    return {"extractor": fid.get("extractor", ""), "device": lat.get("device", ""),
            "latency_batch": lat.get("batch_size"), "base": recipe.get("base", ""),
            "dataset": metrics.get("dataset", recipe.get("dataset") or "")}


def runs_table() -> pd.DataFrame:
    """Every run of every store: ``RunStore.table()`` columns plus store, ref (store:id), path,
    and the measurement setup (extractor, device, latency_batch, base, dataset)."""
    frames = []
    for label, store in stores():
        t = store.table()
        if t.empty:
            continue
        t.insert(0, "store", label)
        t.insert(1, "ref", [f"{label}:{i}" for i in t["id"]])
        t["path"] = [str(store.root / i) for i in t["id"]]
        setups = []
        for i in t["id"]:
            run = store.load(i)
            setups.append(_setup_of(run["metrics"], run["recipe"]))
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

def pareto_front(df: pd.DataFrame, x: str, y: str, higher_is_better: bool = False) -> pd.Series:
    """True for the points no other point beats on both ``x`` (lower is better) and ``y``."""
    mask = pd.Series(False, index=df.index)
    ok = df[[x, y]].dropna()
    if ok.empty:
        return mask
    sign = -1.0 if higher_is_better else 1.0
    best = float("inf")
    for idx, row in ok.assign(_y=sign * ok[y]).sort_values([x, "_y"]).iterrows():
        if row["_y"] < best:
            mask[idx] = True
            best = row["_y"]
    return mask


def block_of(name: str) -> str:
    """A layer's top-level block: ``down_blocks.1.resnets.0.conv1`` → ``down_blocks.1``,
    ``mid_block.attentions.0.to_q`` → ``mid_block``, ``time_embedding.linear_1`` →
    ``time_embedding``, ``conv_in`` → ``conv_in``."""
    parts = str(name).split(".")
    if parts[0].endswith("_blocks") and len(parts) > 1 and parts[1].isdigit():
        return ".".join(parts[:2])
    return parts[0]


# A UNet2DModel's forward order, for sorting layer tables (layers.csv is sorted by name)
_TOP = ["conv_in", "time_proj", "time_embedding", "class_embedding", "down_blocks", "mid_block",
        "up_blocks", "conv_norm_out", "conv_act", "conv_out"]
_STEP = {"resnets": 0, "attentions": 1}           # block i: resnets[i], then attentions[i]
_LAST = {"downsamplers": 0, "upsamplers": 0}       # after every resnet/attention of the block
_SUB = {"norm1": 0, "nonlinearity": 1, "conv1": 2, "time_emb_proj": 3, "norm2": 4,
        "dropout": 5, "conv2": 6, "conv_shortcut": 7, "group_norm": 0, "to_q": 1, "to_k": 2,
        "to_v": 3, "to_out": 4, "linear_1": 0, "act": 1, "linear_2": 2, "conv": 0}


def layer_order(name: str) -> tuple:
    """Sort key of a layer name in the UNet's forward order (input → output)."""
    parts = str(name).split(".")
    key = [(_TOP.index(parts[0]) if parts[0] in _TOP else len(_TOP), 0, parts[0])]
    i = 1
    while i < len(parts):
        p, nxt = parts[i], parts[i + 1] if i + 1 < len(parts) else ""
        if p in _STEP and nxt.isdigit():
            key.append((int(nxt), _STEP[p], p))
            i += 2
        elif p in _LAST and nxt.isdigit():
            key.append((10**6, int(nxt), p))
            i += 2
        elif p.isdigit():
            key.append((int(p), 0, ""))
            i += 1
        else:
            key.append((_SUB.get(p, 50), 0, p))
            i += 1
    return tuple(key)


_SHORT = {"down_blocks": "down", "up_blocks": "up", "mid_block": "mid", "resnets": "res",
          "attentions": "attn", "downsamplers": "downsample", "upsamplers": "upsample",
          "time_embedding": "time", "time_emb_proj": "t_proj", "conv_shortcut": "skip",
          "group_norm": "norm", "linear_1": "lin1", "linear_2": "lin2"}


def short_layer_name(name: str) -> str:
    """A readable short form for axis labels: ``down_blocks.1.resnets.0.conv1`` →
    ``down1.res0.conv1``, ``up_blocks.0.upsamplers.0.conv`` → ``up0.upsample.conv``,
    ``mid_block.attentions.0.to_out.0`` → ``mid.attn0.to_out``."""
    parts, out, i = str(name).split("."), [], 0
    while i < len(parts):
        p, nxt = parts[i], parts[i + 1] if i + 1 < len(parts) else ""
        if p in ("down_blocks", "up_blocks", "resnets", "attentions") and nxt.isdigit():
            out.append(_SHORT[p] + nxt)
            i += 2
        elif (p in ("downsamplers", "upsamplers") or p == "to_out") and nxt == "0":
            out.append(_SHORT.get(p, p))
            i += 2
        else:
            out.append(_SHORT.get(p, p))
            i += 1
    return ".".join(out)


def short_layer_names(names) -> list:
    """:func:`short_layer_name` of each, or the full names if two would collide."""
    names = [str(n) for n in names]
    short = [short_layer_name(n) for n in names]
    return short if len(set(short)) == len(set(names)) else names


def block_table(layers: pd.DataFrame) -> pd.DataFrame:
    """Params and MACs per top-level block (:func:`block_of`), before and after, in forward
    order (conv_in, time_embedding, down_blocks.0, …, mid_block, up_blocks.…, conv_out)."""
    cols = ["params_before", "params_after", "macs_before", "macs_after"]
    df = layers.assign(block=layers["name"].map(block_of))
    out = df.groupby("block", sort=False)[cols].sum(min_count=1).fillna(0).reset_index()
    return out.sort_values("block", key=lambda b: b.map(layer_order),
                           kind="stable").reset_index(drop=True)


def layer_changes(layers: pd.DataFrame) -> pd.DataFrame:
    """What a run did to each layer that has weights in the base, in forward order: channels
    before/after and kept, params kept (after / before) and sparsity after. A layer the run
    replaced by sub-layers (low-rank ``conv`` → ``conv.0`` + ``conv.1``) takes their summed
    params, the last one's output channels and their params-weighted sparsity, and is marked
    ``factorised``. Sparsity is left empty for normalisation layers (zero biases at init)."""
    df = layers.copy()
    has_before = df["params_before"].fillna(0) > 0
    after_only = df[~has_before & df["params_before"].isna() & df["params_after"].notna()]
    rows = []
    for _, r in df[has_before].iterrows():
        rec = {k: r[k] for k in ("name", "type", "channels_before", "channels_after",
                                 "params_before", "params_after", "sparsity_after")}
        rec["factorised"] = False
        if pd.isna(r["params_after"]):
            kids = after_only[after_only["name"].str.startswith(f"{r['name']}.")]
            if len(kids):
                kids = kids.sort_values("name", key=lambda n: n.map(layer_order))
                weights = kids["params_after"].fillna(0)
                rec.update(params_after=weights.sum(), factorised=True,
                           channels_after=kids["channels_after"].iloc[-1],
                           sparsity_after=float((kids["sparsity_after"].fillna(0) * weights).sum()
                                                / weights.sum()) if weights.sum() else 0.0)
        rows.append(rec)
    cols = ["name", "type", "channels_before", "channels_after", "channels_kept",
            "params_before", "params_after", "params_kept", "sparsity", "factorised"]
    if not rows:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame(rows)
    out["channels_kept"] = out["channels_after"] / out["channels_before"]
    out["params_kept"] = out["params_after"] / out["params_before"]
    # normalisation layers start with zero biases (half their params): no pruning signal
    out["sparsity"] = out["sparsity_after"].where(~out["type"].astype(str).str.contains("Norm"))
    out = out.sort_values("name", key=lambda n: n.map(layer_order), kind="stable")
    return out[cols].reset_index(drop=True)


def changed_rows(changes: pd.DataFrame) -> List[str]:
    """Which of ``channels_kept``, ``params_kept`` (factorised layers) and ``sparsity`` the run
    changed in at least one layer: the rows worth a heatmap."""
    rows = []
    both = changes.dropna(subset=["channels_before", "channels_after"])
    if (both["channels_after"] != both["channels_before"]).any():
        rows.append("channels_kept")
    if changes["factorised"].any():
        rows.append("params_kept")
    if (changes["sparsity"].fillna(0) > 0).any():
        rows.append("sparsity")
    return rows


def channel_table(layers: pd.DataFrame) -> pd.DataFrame:
    """Layers with weights: fraction of channels kept and sparsity after compression."""
    df = layers[layers["params_before"].fillna(0) > 0].copy()
    df["channels_kept"] = df["channels_after"] / df["channels_before"]
    df["sparsity"] = df["sparsity_after"]
    return df[["name", "type", "channels_before", "channels_after", "channels_kept",
               "sparsity"]].reset_index(drop=True)


def markdown_table(df: pd.DataFrame) -> str:
    """Markdown (pipe) table: pandas' ``to_markdown`` (needs tabulate), else a tiny formatter."""
    try:
        return df.to_markdown(index=False)
    except ImportError:
        cells = [[("" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)))
                  .replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
        head = [str(c) for c in df.columns]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def latex_table(df: pd.DataFrame) -> Optional[str]:
    """LaTeX tabular (pandas' ``to_latex`` needs jinja2); None when jinja2 is missing."""
    try:
        return df.to_latex(index=False, float_format="%.4g", na_rep="--")
    except ImportError:
        return None


def zip_folder(folder) -> bytes:
    """A zip archive (in memory) of ``folder``, paths relative to its parent."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder.parent))
    return buf.getvalue()



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


REPORTED_COLUMNS = ["paper", "dataset", "method", "metric", "value", "params_m", "macs_g",
                    "size_mb", "source_note"]
# Pareto cost axis → reported column, what one unit of that column is in the run table's raw
# units, and the unit as printed. The papers' "MB" are decimal: 35.7463 M float32 parameters
# are 143.0e6 bytes and print as 143.1 MB. Their GMACs are per UNet call (6.0641 for the base).
REPORTED_X = {"params": ("params_m", 1e6, "M params"), "macs": ("macs_g", 1e9, "GMACs"),
              "bytes": ("size_mb", 1e6, "MB")}


def reported_points() -> pd.DataFrame:
    """Numbers the seed papers report (``litediff_core/reported_points.csv``, one row per table
    row: :data:`REPORTED_COLUMNS`), every cell as printed (strings, "" when the table gives
    none), or an empty frame when the file is absent."""
    path = REPO / "litediff_core" / "reported_points.csv"
    if not path.exists():
        return pd.DataFrame(columns=REPORTED_COLUMNS)
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def reported_mismatch(datasets) -> str:
    """"" when every shown run is of a CIFAR-10 base (the only dataset of the reported points),
    else a one-line caption naming the runs' datasets."""
    shown = sorted({d if isinstance(d, str) and d else "of an unknown dataset" for d in datasets})
    if shown == ["cifar10"]:
        return ""
    return (f"Reported points are CIFAR-10 figures from the seed papers; these runs are "
            f"{', '.join(shown)}, so none are overlaid.")


def reported_on_axis(points: pd.DataFrame, x: str, y: str, scale: float) -> pd.DataFrame:
    """The reported rows of metric ``y`` that give a number for cost axis ``x``: columns x (in
    the axis' units: the row's number in raw units times ``scale``, the axis' own scale), y
    and hover (paper, method, printed numbers, source note). Empty for axes no paper reports."""
    out = pd.DataFrame(columns=["x", "y", "hover"])
    if x not in REPORTED_X or REPORTED_X[x][0] not in points.columns or points.empty:
        return out
    col, raw, unit = REPORTED_X[x]
    rows = points.assign(x=pd.to_numeric(points[col], errors="coerce") * raw * scale,
                         y=pd.to_numeric(points["value"], errors="coerce"))
    rows = rows[(rows["metric"].astype(str).str.lower() == y) & rows["x"].notna()
                & rows["y"].notna()]
    if rows.empty:
        return out
    hover = [f"<b>{r['paper']}</b><br>{r['method']}<br>{str(r['metric']).upper()} {r['value']} "
             f"(reported)<br>{r[col]} {unit}<br>"
             + "<br>".join(textwrap.wrap(str(r["source_note"]), 90))
             for _, r in rows.iterrows()]
    return rows[["x", "y"]].assign(hover=hover).reset_index(drop=True)


def metrics_json(ref: str) -> str:
    store, run_id = resolve(ref)
    return json.dumps(store.load(run_id)["metrics"], indent=2, default=str)


# ----------------------------------------------------------------------------- model-side helpers

def previewable(stage: str) -> bool:
    """Whether a stage's size can be predicted without data or training (its own trait)."""
    from litediff_core.compress import STAGES

    return stage in STAGES and STAGES[stage].previewable


@st.cache_data(show_spinner="Predicting the compressed size…", max_entries=64)
def predict_size(source: str, stages_json: str) -> dict:
    """Apply only the structural stages of a recipe (:func:`previewable`) to a deep copy of the
    cached base, on the CPU, and measure it with ``size_report``: a prediction, made without
    data (gradient rankings are replaced by L1, which removes the same number of channels per
    layer unless pruning is global). Training and quantization stages are skipped."""
    import copy

    from litediff_core.compress import CompressState, make_stage
    from litediff_core.metrics import size_report

    base = load_model(source)
    state = CompressState.start(copy.deepcopy(base.unet).cpu(), base.scheduler,
                                dataset=base.meta.dataset)
    applied, skipped, notes = [], [], []
    for spec in json.loads(stages_json):
        name, cfg = spec["stage"], dict(spec.get("config") or {})
        if name == "distill" and cfg.get("fresh"):
            notes.append("a fresh distillation student replaces the model: its size is measured "
                         "only after the run")
        if not previewable(name):
            skipped.append(name)
            continue
        if name == "structured-prune" and cfg.get("importance") in ("taylor", "diff-pruning"):
            notes.append(f"{cfg['importance']} ranking needs data and gradients: predicted with "
                         f"l1 ranking" + (" (global pruning: channel counts may differ)"
                                          if cfg.get("global_pruning") else
                                          " (same channel count per layer)"))
            cfg["importance"] = "l1"
        if name == "unstructured-prune" and cfg.get("method") == "tiny-diffusion":
            notes.append("tiny-diffusion ranking needs gradients: predicted with l1 ranking "
                         "(same number of zeros per layer)")
            cfg["method"] = "l1"
        state = make_stage({"stage": name, "config": cfg}).apply(state)
        applied.append(name)
    return {"size": size_report(state.unet), "applied": applied, "skipped": skipped,
            "notes": notes}


@st.cache_data(show_spinner=False, max_entries=128)
def sampler_cell(source: str, stamp: float, sampler: str, steps: int, n: int, seed: int,
                 device: str):
    """``n`` images of a model with one sampler and step count (same seed → same starting noise
    for every cell) and the measured wall time of ``generate`` in seconds. Cached by every
    input; the model is a deep copy of the cached one."""
    import copy
    import time

    from litediff_core.samplers import generate

    base = load_model(source, stamp)
    unet = copy.deepcopy(base.unet).to(device)
    t0 = time.perf_counter()
    images = generate(unet, dict(base.scheduler.config), sampler=sampler, steps=steps, n=n,
                      seed=seed, device=device)
    return images, time.perf_counter() - t0


def model_shape(run_folder) -> str:
    """C×H×W of a run's saved model (from its UNet config), or "model-sized" if unreadable."""
    for cfg in (Path(run_folder) / "model" / "unet" / "config.json",
                Path(run_folder) / "model" / "config.json"):
        try:
            c = json.loads(cfg.read_text())
            size = c["sample_size"]
            h, w = (size, size) if isinstance(size, int) else size
            return f"{c['in_channels']}×{h}×{w}"
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return "model-sized"


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def stamp_of(folder) -> float:
    """A run folder's modification stamp (its status file), for cache keys."""
    p = Path(folder) / "status.json"
    return p.stat().st_mtime if p.exists() else 0.0
