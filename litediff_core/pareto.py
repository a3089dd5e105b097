"""The Pareto front of a table of runs: the points no other point beats on both axes."""

from __future__ import annotations

import pandas as pd


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


def showcase(df: pd.DataFrame) -> pd.Index:
    """The rows a first look at samples should compare, all evaluated the same way: the dense
    base, the compressed run with the lowest FID and the fastest compressed run (per step)
    that passes the quality gate (the fastest of all where none does or there is no gate).
    The setup (``eval``): of those the dense base was evaluated with, the one with the most
    samples (``n``), then the most compressed runs. Empty where no setup has a dense base and
    a compressed run. ``df``: ``RunStore.table`` rows (``dense``, ``n``, ``eval``, …)."""
    done = df[df["status"] == "done"]
    dense = done["dense"].astype(bool)
    counts = {ev: int((~dense & (done["eval"] == ev)).sum())
              for ev in done.loc[dense, "eval"].unique()}
    setups = [ev for ev, k in counts.items() if k]
    if not setups:
        return pd.Index([])
    n = done.groupby("eval")["n"].max()
    ev = max(setups, key=lambda e: (n[e], counts[e]))
    same = done[done["eval"] == ev]
    base = same[dense[same.index]].sort_values("created").index[:1]
    compressed = same[~dense[same.index]]
    usable = compressed[compressed["gate"] == True]  # noqa: E712 (a column of True/False/None)
    fid = compressed["fid"].dropna()
    speed = (usable if len(usable) else compressed)["speedup"].dropna()
    picks = [*base, *([fid.idxmin()] if len(fid) else []),
             *([speed.idxmax()] if len(speed) else [])]
    return pd.Index(list(dict.fromkeys(picks)))
