"""The seed papers' reported CIFAR-10 points (``litediff_core/reported_points.csv``): every
number is copied as printed in the table row it cites, and the Pareto page's helpers place
them on the right axes only over CIFAR-10 runs."""

import csv
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `pages._shared` lives next to app.py
    sys.path.insert(0, str(REPO))

CSV = REPO / "litediff_core" / "reported_points.csv"
SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"  # not part of the repository
SEED_OF = {"LiteDiffusion": "litediffusion-cifar10.md"}  # source_note prefix → seed file
COLUMNS = ["paper", "dataset", "method", "metric", "value", "params_m", "macs_g", "size_mb",
           "source_note"]
NUMBERS = ["value", "params_m", "macs_g", "size_mb"]  # all printed as FID, M, GMACs, MB(s)
CITE = re.compile(r"^(\w+) Table (\d+), row '([^']+)'")


def rows() -> list:
    with CSV.open(newline="") as f:
        return list(csv.DictReader(f))


def seed_text(row: dict) -> str:
    if not SEEDS.is_dir():
        pytest.skip(f"seed papers' text not found at {SEEDS} (it lives outside the repository)")
    return (SEEDS / SEED_OF[CITE.match(row["source_note"]).group(1)]).read_text()


def table_rows(text: str, number: str) -> list:
    """The tab-separated rows (cells, <b> tags removed) of table ``number``: the lines with
    tabs just above its caption ``Table N.``."""
    lines = text.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith(f"Table {number}."))
    block = []
    for line in reversed(lines[:end]):
        if "\t" in line:
            block.append([re.sub(r"</?b>", "", c).strip() for c in line.split("\t")])
        elif block:
            break
    return block[::-1]


def test_csv_has_the_columns_and_only_cifar10_rows():
    table = pd.read_csv(CSV, dtype=str, keep_default_na=False)
    assert list(table.columns) == COLUMNS
    assert len(table) > 0
    assert set(table["dataset"]) == {"cifar10"}
    assert set(table["metric"]) == {"fid"}
    for row in rows():
        assert CITE.match(row["source_note"]), row["source_note"]
        assert CITE.match(row["source_note"]).group(1) in SEED_OF
        for col in NUMBERS:
            assert row[col] == "" or re.fullmatch(r"\d+(\.\d+)?", row[col]), (col, row)
        assert row["value"], row  # every row has its FID


def test_every_number_appears_verbatim_in_the_seed_it_cites():
    for row in rows():
        text = seed_text(row)
        for col in NUMBERS:
            if row[col]:
                assert row[col] in text, (col, row[col], row["source_note"])


def test_every_number_is_in_the_table_row_it_cites():
    for row in rows():
        _, number, label = CITE.match(row["source_note"]).groups()
        table = table_rows(seed_text(row), number)
        matches = [cells for cells in table[1:]  # [0]: the header
                   if any(" ".join(cells[:k]) == label for k in range(1, len(cells)))]
        assert len(matches) == 1, (label, number, matches)
        printed = {c.split()[0] for c in matches[0] if c}  # "143.11 MBs" → "143.11"
        for col in NUMBERS:
            if row[col]:
                assert row[col] in printed, (col, row[col], label, matches[0])


def test_page_helpers_place_reported_points_on_cifar10_axes_only():
    from litediff_core import reported as ui

    points = ui.reported_points()
    assert len(points) == len(rows()) and points["value"].iloc[0] == rows()[0]["value"]
    assert ui.reported_mismatch(["cifar10", "cifar10"]) == ""
    for shown in (["fashion-mnist"], ["cifar10", "fashion-mnist"], [""]):
        note = ui.reported_mismatch(shown)
        assert "CIFAR-10" in note and "\n" not in note
    assert "fashion-mnist" in ui.reported_mismatch(["fashion-mnist"])

    one = pd.DataFrame([{"paper": "P", "dataset": "cifar10", "method": "m", "metric": "fid",
                         "value": "37.90", "params_m": "15.6703", "macs_g": "2.6574",
                         "size_mb": "", "source_note": "note"}])
    params = ui.reported_on_axis(one, "params", "fid", 1e-6)  # the Pareto axes' scales
    assert params["x"].tolist() == pytest.approx([15.6703]) and params["y"].tolist() == [37.9]
    assert all(s in params["hover"][0] for s in ("P", "m", "37.90", "15.6703 M params", "note"))
    macs = ui.reported_on_axis(one, "macs", "fid", 1e-6)  # GMACs per call → M MACs per step
    assert macs["x"].tolist() == pytest.approx([2657.4])
    assert ui.reported_on_axis(one, "bytes", "fid", 1 / 2**20).empty  # no size printed
    sized = one.assign(size_mb="143.1")
    assert ui.reported_on_axis(sized, "bytes", "fid", 1 / 2**20)["x"].tolist() == \
        pytest.approx([143.1e6 / 2**20])  # decimal MB → MiB
    for x in ("latency_ms", "image_ms", "macs_total"):  # never reported: never drawn
        assert ui.reported_on_axis(one, x, "fid", 1.0).empty
    assert ui.reported_on_axis(one, "params", "kid", 1e-6).empty

    # the shipped file: every row with params is drawn on the params axis, none elsewhere
    drawn = ui.reported_on_axis(points, "params", "fid", 1e-6)
    assert len(drawn) == (points["params_m"] != "").sum() > 0
    assert len(ui.reported_on_axis(points, "macs", "fid", 1e-6)) == (points["macs_g"] != "").sum()
