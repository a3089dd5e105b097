"""Figures the seed papers report (``reported_points.csv``): shown only as labelled reference
points, over runs of the same dataset, never in a computed frontier."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd

POINTS_CSV = Path(__file__).resolve().parent / "reported_points.csv"

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
    path = POINTS_CSV
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
