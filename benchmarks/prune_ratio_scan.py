"""Which structured ratio gives which real speed-up: prune the embedded default at several ratios
(global and layer-wise ranking) and time one denoising step against the dense model, as every run
does (``latency_vs_base``: alternating rounds, median ratio, batch 16). No training: this picks
the ratio a recovery run (``benchmarks/recovery.py``) needs for the ≥ 1.8× target before hours
are spent on it. Writes ``benchmarks/prune_ratio_scan.md``.

    python benchmarks/prune_ratio_scan.py                          # Diff-Pruning, 0.3 … 0.5
    python benchmarks/prune_ratio_scan.py --importance l1 --ratios 0.3 0.4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--importance", default="diff-pruning")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.35, 0.4, 0.45, 0.5])
    ap.add_argument("--out", default=str(HERE / "prune_ratio_scan.md"))
    args = ap.parse_args(argv)

    from litediff_core.compress import CompressState, StructuredPrune
    from litediff_core.data import load_dataset
    from litediff_core.device import cpu_label
    from litediff_core.metrics import size_report
    from litediff_core.models import load_base
    from litediff_core.runs.measure import latency_vs_base

    base = load_base("embedded")
    data = load_dataset("fashion-mnist", "train")
    dense_macs = size_report(base.unet)["macs_per_image"]
    rows = []
    for global_pruning in (True, False):
        for ratio in args.ratios:
            state = CompressState.start(base.unet, base.scheduler, dataset="fashion-mnist",
                                        data=data)
            state = StructuredPrune(ratio=ratio, importance=args.importance,
                                    global_pruning=global_pruning).apply(state)
            size = size_report(state.unet)
            t = latency_vs_base(base.unet, state.unet, 16, "cpu")
            rows.append((f"{'global' if global_pruning else 'layer-wise'} {ratio:.0%}",
                         size["params"], size["macs_per_image"] / dense_macs, t))
            print(rows[-1][0], f"{t['speedup']:.2f}×", file=sys.stderr, flush=True)
    lines = [f"# Structured {args.importance}: prune ratio → real per-step speed-up", "",
             f"Command: `python benchmarks/prune_ratio_scan.py --importance {args.importance} "
             f"--ratios {' '.join(str(r) for r in args.ratios)}`  ",
             f"Machine: {cpu_label()}; written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "Untrained pruned models (speed does not depend on the weights' values). One "
             "denoising step, batch 16, fp32 PyTorch; speed-up = median of 3 alternating rounds "
             "against the dense model in this process.", "",
             "| ranking, ratio | params | MACs vs dense | step ms | speed-up per step (rounds) |",
             "|---|---|---|---|---|"]
    for name, params, macs, t in rows:
        rounds = ", ".join(f"{r:.2f}" for r in t["speedup_rounds"])
        lines.append(f"| {name} | {params / 1e6:.2f} M | {macs:.0%} | "
                     f"{t['latency'].median_s * 1e3:.1f} | {t['speedup']:.2f}× ({rounds}) |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
