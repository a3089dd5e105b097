"""Layer names of a diffusers UNet2DModel in forward order, short labels for axes, and the
per-layer / per-block tables the Layers and Explore pages draw (from a run's ``layers.csv``)."""

from __future__ import annotations

from typing import List

import pandas as pd


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
    for r in df[has_before].to_dict("records"):  # plain dicts: iterrows costs 0.05 s here
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
