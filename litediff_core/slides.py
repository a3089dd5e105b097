"""Tables of runs for slides: formatted numbers, readable Markdown, LaTeX that compiles.

Pure functions over the run table (``RunStore.table()`` columns, or the dashboard's table with
``store``/``extractor``/``device`` added); no Streamlit::

    table = slide_table(runs)              # strings: "2.73", "1.27×", "74.6 [59.9, 89.9]"
    markdown(table)                        # a pipe table, columns padded, numbers right-aligned
    latex(table)                           # a tabular, every special character escaped
    latex_document(latex(table))           # a standalone document (pdflatex compiles it)

``slide_table(runs, "slide")`` keeps the columns a comparison slide needs (``SLIDE``): name,
params (M), size (MiB), MACs (M), speed-up per step, the per-image speed-up when the table has
an ``image_speedup`` column with values, FID with its bootstrap 95 % interval, SSIM to the base.
``slide_table(runs, "all")`` formats every known column the same way. Units sit in the headers;
missing values show as an em dash. CSV exports should use the raw table instead.
"""

from __future__ import annotations

import math
import unicodedata
from datetime import datetime
from numbers import Number
from typing import Callable, Dict, List, Tuple

import pandas as pd

MISSING = "—"


# ----------------------------------------------------------------------------- numbers

def _ok(v) -> bool:
    if v is None or isinstance(v, bool):
        return False
    try:
        return isinstance(v, Number) and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def sig(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits in fixed notation (never 1.27e+06):
    1.2712 → "1.27", 153.88 → "154", 0.19512 → "0.195", 0 → "0"."""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{min(decimals, 6)}f}"


def fixed(decimals: int, scale: float = 1.0, suffix: str = "") -> Callable:
    return lambda v: f"{v * scale:.{decimals}f}{suffix}"


def significant(scale: float = 1.0, digits: int = 3, suffix: str = "") -> Callable:
    return lambda v: f"{sig(v * scale, digits)}{suffix}"


def fid_value(v: float) -> str:
    """FID as the library labels it: one decimal from 10 up, 3 significant digits below."""
    return f"{v:.1f}" if abs(v) >= 10 else sig(v, 3)


def _plain(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return sig(v, 4) if math.isfinite(v) else str(v)
    return str(v)


def _date(v) -> str:
    if not _ok(v):
        return MISSING
    return datetime.fromtimestamp(float(v)).strftime("%Y-%m-%d %H:%M")


# ----------------------------------------------------------------------------- columns

# column of the run table → (header, formatter of one value, numeric: right-aligned)
Column = Tuple[str, Callable, bool]
COLUMNS: Dict[str, Column] = {
    "store": ("store", _plain, False),
    "id": ("run", _plain, False),
    "name": ("name", _plain, False),
    "method": ("method", _plain, False),
    "status": ("status", _plain, False),
    "params": ("params (M)", significant(1e-6), True),
    "nonzero_params": ("non-zero params (M)", significant(1e-6), True),
    "bytes": ("size (MiB)", significant(1 / 2**20), True),
    "macs": ("MACs (M)", fixed(1, 1e-6), True),
    "latency_ms": ("step latency (ms)", fixed(1), True),
    "speedup": ("speed-up per step", fixed(2, suffix="×"), True),
    "image_ms": ("time per image (ms)", fixed(1), True),
    "image_speedup": ("speed-up per image", fixed(2, suffix="×"), True),
    "macs_total": ("MACs per image (G)", significant(1e-9), True),
    "fid": ("FID", fid_value, True),
    "fid_lo": ("FID 2.5%", fid_value, True),
    "fid_hi": ("FID 97.5%", fid_value, True),
    "kid": ("KID", fixed(4), True),
    "ssim_to_base": ("SSIM to base", fixed(3), True),
    "psnr_to_base": ("PSNR to base (dB)", fixed(1), True),
    "gate": ("quality gate", lambda v: "passes" if v else "fails", False),
    "train_steps": ("training steps", lambda v: f"{int(v)}", True),
    "wall_s": ("run time (s)", fixed(0), True),
    "eval": ("evaluation", _plain, False),
    "extractor": ("FID features", _plain, False),
    "device": ("device", _plain, False),
    "latency_batch": ("latency batch", lambda v: f"{int(v)}", True),
    "created": ("finished", _date, False),
    "error": ("error", _plain, False),
}
FID_CI = "fid_ci"  # a derived column: "FID [2.5 %, 97.5 %]"
FID_CI_HEADER = "FID [95% CI]"
SLIDE = ["name", "params", "bytes", "macs", "speedup", "image_speedup", FID_CI, "ssim_to_base"]
OPTIONAL = {"image_speedup"}  # on slides only when the table has the column and values in it


def _cell(column: str, value) -> str:
    header, fmt, numeric = COLUMNS.get(column, (column, _plain, False))
    if column == "created":
        return fmt(value)
    if numeric or column == "gate":
        if column == "gate":
            return MISSING if value is None or (isinstance(value, float) and math.isnan(value)) \
                else fmt(bool(value))
        return fmt(float(value)) if _ok(value) else MISSING
    return _plain(value)


def _fid_ci(row) -> str:
    fid, lo, hi = row.get("fid"), row.get("fid_lo"), row.get("fid_hi")
    if not _ok(fid):
        return MISSING
    if _ok(lo) and _ok(hi):
        return f"{fid_value(float(fid))} [{fid_value(float(lo))}, {fid_value(float(hi))}]"
    return fid_value(float(fid))


def columns_for(runs: pd.DataFrame, which="slide") -> List[str]:
    """The columns a ``which`` ("slide", "all" or a list of run-table columns) table shows."""
    if which == "slide":
        out = []
        for c in SLIDE:
            if c == FID_CI:
                if "fid" in runs.columns:
                    out.append(c)
            elif c in runs.columns and (c not in OPTIONAL or runs[c].notna().any()):
                out.append(c)
        return out
    if which == "all":
        return [c for c in COLUMNS if c in runs.columns]
    return [c for c in which if c == FID_CI or c in runs.columns]


def slide_table(runs: pd.DataFrame, which="slide") -> pd.DataFrame:
    """The runs as strings with units in the headers (see the module docstring). The frame's
    ``attrs["numeric"]`` lists the headers of numeric (right-aligned) columns."""
    cols = columns_for(runs, which)
    data, numeric = {}, []
    for c in cols:
        if c == FID_CI:
            header = FID_CI_HEADER
            data[header] = [_fid_ci(r) for _, r in runs.iterrows()]
            numeric.append(header)
            continue
        header, _, is_num = COLUMNS.get(c, (c, _plain, False))
        data[header] = [_cell(c, v) for v in runs[c].tolist()]
        if is_num:
            numeric.append(header)
    out = pd.DataFrame(data, index=range(len(runs)), columns=list(data))
    out.attrs["numeric"] = numeric
    return out


def setup_note(runs: pd.DataFrame) -> str:
    """What the numbers were measured with, for a caption: evaluation setups, FID features,
    devices (each distinct value once)."""
    parts = []
    for col, what in (("eval", "FID on"), ("extractor", "features"), ("device", "latency on")):
        if col in runs.columns:
            values = sorted({str(v) for v in runs[col].dropna() if str(v)})
            if values:
                parts.append(f"{what} {', '.join(values)}")
    return ("; ".join(parts) + ". MACs per image and UNet step; speed-up: the base's step "
            "latency over this run's, measured in the same run; FID interval: bootstrap 95%."
            ) if parts else ""


# ----------------------------------------------------------------------------- Markdown

def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown(table: pd.DataFrame, caption: str = "") -> str:
    """A pipe table whose columns are padded to one width (readable as plain text); numeric
    columns right-aligned. ``caption`` goes below it in italics."""
    numeric = set(table.attrs.get("numeric", []))
    heads = [_md_cell(h) for h in table.columns]
    rows = [[_md_cell(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(heads)]

    def line(cells, right):
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w)
                                 for c, w, r in zip(cells, widths, right)) + " |"

    right = [h in numeric for h in table.columns]
    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2))
                          for w, r in zip(widths, right)) + "|"
    out = [line(heads, [False] * len(heads)), rule] + [line(r, right) for r in rows]
    if caption:
        out += ["", f"*{_md_cell(caption)}*"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", '"': r"\textquotedbl{}",
}
# Non-ASCII characters that plain pdflatex (utf8 input) lacks or that read better as commands
_LATEX_UNICODE = {
    "×": r"$\times$", "±": r"$\pm$", "→": r"$\rightarrow$", "←": r"$\leftarrow$",
    "—": "---", "–": "--", "−": "$-$", "≥": r"$\geq$", "≤": r"$\leq$", "≈": r"$\approx$",
    "α": r"$\alpha$", "β": r"$\beta$", "λ": r"$\lambda$", "µ": r"$\mu$", "μ": r"$\mu$",
    "σ": r"$\sigma$", "ε": r"$\varepsilon$", "η": r"$\eta$", "·": r"$\cdot$", "…": r"\dots{}",
    "°": r"\textdegree{}", "²": r"\textsuperscript{2}", "√": r"$\surd$", "∂": r"$\partial$",
    "‖": r"$\|$", "∞": r"$\infty$", "‘": "`", "’": "'", "“": "``", "”": "''", "\u00a0": "~",
}


def latex_escape(text) -> str:
    """``text`` as LaTeX text: the ten special characters (``\\ & % $ # _ { } ~ ^``) and
    ``< > | "`` escaped, common symbols (× ± → — ≥ α …) as commands, other non-ASCII letters
    without their accents (é → e), anything left as ``?``: the result compiles with plain
    pdflatex."""
    out = []
    for ch in str(text):
        if ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        elif ch in _LATEX_UNICODE:
            out.append(_LATEX_UNICODE[ch])
        elif ch in "\n\r\t":
            out.append(" ")
        elif ord(ch) < 128:
            out.append(ch if ch.isprintable() else " ")
        else:
            ascii_ = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
            out.append("".join(_LATEX_SPECIAL.get(c, c) for c in ascii_) if ascii_ else "?")
    return "".join(out)


def latex(table: pd.DataFrame, caption: str = "") -> str:
    """A ``tabular`` (plain LaTeX, ``\\hline`` rules: no package needed), numeric columns
    right-aligned, every cell and header escaped. ``caption`` follows as a small line."""
    numeric = set(table.attrs.get("numeric", []))
    spec = "".join("r" if h in numeric else "l" for h in table.columns)
    lines = [r"\begin{tabular}{" + spec + "}", r"\hline",
             " & ".join(latex_escape(h) for h in table.columns) + r" \\", r"\hline"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\"
              for row in table.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}"]
    if caption:
        lines += ["", r"{\small " + latex_escape(caption) + "}"]
    return "\n".join(lines) + "\n"


def latex_document(body: str, landscape: bool = True) -> str:
    """``body`` in a minimal standalone article (compiles with pdflatex from
    texlive-latex-base; paste only the tabular into your own slides)."""
    geometry = r"\usepackage[landscape,margin=1cm]{geometry}" if landscape else \
        r"\usepackage[margin=1cm]{geometry}"
    return "\n".join([r"\documentclass{article}", r"\usepackage[utf8]{inputenc}",
                      r"\usepackage[T1]{fontenc}", geometry, r"\pagestyle{empty}",
                      r"\begin{document}", r"\noindent", body.rstrip(), r"\end{document}", ""])
