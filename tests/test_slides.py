"""Tables for slides (litediff_core.slides): formatted numbers, readable Markdown, LaTeX with
every special character escaped that compiles with pdflatex (Debian: texlive-latex-base;
``./run tests`` installs it as root; without it the compile test skips, under CI=true it fails)."""

import math
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest

from litediff_core import slides

NASTY = "prune_50% & KD #2 $x {y} ~z ^w \\v <a> |b \"c\" × ± → — é α 日本"


def runs(**extra):
    df = pd.DataFrame({
        "id": ["r1", "r2"], "name": [NASTY, "dense base"], "method": ["m → n", "base (dense)"],
        "status": ["done", "done"], "params": [1271200.0, 2734945.0],
        "nonzero_params": [1271200.0, 2734945.0], "bytes": [5.2e6, 11010048.0],
        "macs": [152.3e6, 290.9e6], "latency_ms": [153.88865249997252, 73.6],
        "speedup": [1.2712, 1.0], "fid": [81.234, 74.61], "fid_lo": [70.0, 59.91],
        "fid_hi": [95.55, 89.94], "kid": [0.01234, 0.0098], "ssim_to_base": [0.71234, 1.0],
        "psnr_to_base": [17.26, None], "gate": [False, True], "train_steps": [400, None],
        "wall_s": [812.4, 30.0], "eval": ["200 samples, ddim 50 steps"] * 2,
        "created": [1.7e9, 1.7e9], "error": ["", ""],
        "extractor": ["litediff-fmnist-cnn-v1"] * 2, "device": ["cpu"] * 2})
    for k, v in extra.items():
        df[k] = v
    return df


def test_numbers_are_formatted_for_people():
    assert slides.sig(1.2712) == "1.27" and slides.sig(153.88865) == "154"
    assert slides.sig(0.19512) == "0.195" and slides.sig(0) == "0"
    assert slides.sig(1271200 / 1e6) == "1.27" and "e" not in slides.sig(1.2e-5)
    t = slides.slide_table(runs())
    assert list(t.columns) == ["name", "params (M)", "size (MiB)", "MACs (M)",
                               "speed-up per step", "FID [95% CI]", "SSIM to base"]
    assert t.iloc[0].tolist()[1:] == ["1.27", "4.96", "152.3", "1.27×", "81.2 [70.0, 95.5]",
                                      "0.712"]
    assert t.iloc[1, 1] == "2.73" and t.iloc[1, 2] == "10.5"
    full = slides.slide_table(runs(), "all")
    assert full.loc[0, "step latency (ms)"] == "153.9"
    assert full.loc[1, "PSNR to base (dB)"] == slides.MISSING
    assert full.loc[0, "quality gate"] == "fails" and full.loc[1, "quality gate"] == "passes"
    assert full.loc[0, "training steps"] == "400" and full.loc[1, "training steps"] == "—"
    assert full.loc[0, "finished"].startswith("20")
    for cell in full.to_numpy().ravel():  # no raw floats, no scientific notation
        assert not any(s in cell for s in ("e+", "e-0", "0000000", "nan", "None")), cell


def test_per_image_speedup_only_when_the_table_has_it():
    assert "speed-up per image" not in slides.slide_table(runs()).columns
    assert "speed-up per image" not in slides.slide_table(
        runs(image_speedup=[math.nan, math.nan])).columns  # the column, but no values yet
    t = slides.slide_table(runs(image_speedup=[5.049, None], image_ms=[512.0, None],
                                macs_total=[7.6e9, None]))
    assert list(t.columns).index("speed-up per image") == 5
    assert t["speed-up per image"].tolist() == ["5.05×", "—"]
    full = slides.slide_table(runs(image_speedup=[5.049, None], image_ms=[512.0, None],
                                   macs_total=[7.6e9, None]), "all")
    assert full.loc[0, "time per image (ms)"] == "512.0"
    assert full.loc[0, "MACs per image (G)"] == "7.60"


def test_markdown_is_an_aligned_pipe_table():
    t = slides.slide_table(runs())
    md = slides.markdown(t, "FID on 200 samples")
    lines = md.splitlines()
    assert lines[0].startswith("| name") and lines[-1] == "*FID on 200 samples*"
    table = lines[:4]
    assert len({len(line) for line in table}) == 1  # padded: columns line up as plain text
    assert lines[1].split("|")[2].endswith(":")      # numbers right-aligned
    assert "\\|b" in lines[2] and lines[2].count(" | ") == len(t.columns) - 1


def test_latex_escapes_every_special_character():
    esc = slides.latex_escape("_ % & # $ { } ~ ^ \\")
    assert esc == (r"\_ \% \& \# \$ \{ \} \textasciitilde{} \textasciicircum{} "
                   r"\textbackslash{}")
    assert slides.latex_escape("1.27×") == r"1.27$\times$"
    assert slides.latex_escape("é日") == "e?"
    tex = slides.latex(slides.slide_table(runs(), "all"), slides.setup_note(runs()))
    rows = [line for line in tex.splitlines() if line.endswith(r" \\")]
    assert len(rows) == 3  # header and two runs
    escapes = re.compile(r"\\[_%&#${}]|\\text[a-z]+\{\}|\$\\[a-zA-Z]+\$|\$-\$")
    for row in rows:
        for cell in row[:-3].split(" & "):
            left = escapes.sub("", cell)
            assert not set(left) & set("_%&#${}~^\\<>|\""), (cell, left)
            assert left.isascii(), cell
    assert r"prune\_50\% \& KD \#2 \$x \{y\}" in tex
    slide = slides.latex(slides.slide_table(runs()))
    assert r"\begin{tabular}{lrrrrrr}" in slide and "95\\% CI" in slide


def test_latex_compiles_with_pdflatex(tmp_path):
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        message = "pdflatex missing (Debian package texlive-latex-base)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must install it (./run tests does as root)")
        pytest.skip(message)
    df = runs(image_speedup=[5.049, None])
    for which in ("slide", "all"):
        doc = slides.latex_document(slides.latex(slides.slide_table(df, which),
                                                 slides.setup_note(df)))
        (tmp_path / f"{which}.tex").write_text(doc, encoding="utf-8")
        done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error",
                               f"{which}.tex"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        log = (tmp_path / f"{which}.log").read_text(errors="replace")
        assert done.returncode == 0, log[-3000:]
        assert (tmp_path / f"{which}.pdf").stat().st_size > 1000
        assert "Missing character" not in log and "Undefined control" not in log
