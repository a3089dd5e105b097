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
