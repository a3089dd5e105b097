"""int8 through ONNX Runtime against PyTorch fp32 and ORT fp32: one denoising step of the
embedded default, by CPU threads and batch size.

    python benchmarks/onnx_speed.py                   # writes benchmarks/onnx_speed.md

The int8 model is made by the ``quant-onnx-int8`` stage with its defaults (static QDQ, per-channel
7-bit weights, uint8 activations with 99.99th-percentile ranges, first/last conv fp32,
calibrated over timesteps). For every
(threads, batch) the three models are timed in ``--rounds`` alternating rounds (PyTorch, ORT fp32,
ORT int8, PyTorch, …) so that load on this machine hits them alike; each figure is the median of
the rounds' medians, and the ratios are taken round by round. Before each timing the machine idles ``--pause`` seconds: PyTorch's
OpenMP threads and each ONNX Runtime session's threads spin-wait for a while after a call, and on
a 2-core machine a pool still spinning slows the next model down (back to back, ORT int8 at 2
threads measured 35 ms instead of 20 ms per step at batch 16).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from litediff_core.compress import make_stage  # noqa: E402
from litediff_core.compress.base import CompressState  # noqa: E402
from litediff_core.device import cpu_label  # noqa: E402
from litediff_core.metrics import step_latency  # noqa: E402
from litediff_core.models import load_base  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="embedded")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pause", type=float, default=0.5,
                   help="seconds idle before timing each model (0: back to back)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "onnx_speed.md"))
    args = p.parse_args(argv)

    base = load_base(args.base)
    state = CompressState.start(base.unet, base.scheduler)
    int8 = make_stage({"stage": "quant-onnx-int8"}).apply(state).unet
    models = {"PyTorch fp32": base.unet.eval(), "ORT fp32": int8.fp32_reference(),
              "ORT int8": int8}
    lines = ["# ONNX Runtime int8 vs PyTorch fp32, one denoising step", "",
             f"Command: `python benchmarks/onnx_speed.py --threads {args.threads} --batches "
             f"{args.batches} --rounds {args.rounds} --pause {args.pause}`  ",
             f"Model: `{args.base}`; machine {platform.machine()} ({cpu_label()}), "
             f"torch {torch.__version__}; "
             f"written {time.strftime('%Y-%m-%d %H:%M')}. Median ms per step (median over "
             f"{args.rounds} alternating rounds of {args.repeats} timed calls); speed-up = "
             f"PyTorch fp32 / ORT int8, median of the per-round ratios [min, max].", "",
             "| threads | batch | PyTorch fp32 ms | ORT fp32 ms | ORT int8 ms | int8 speed-up "
             "vs PyTorch | int8 vs ORT fp32 |", "|---|---|---|---|---|---|---|"]
    for threads in (int(t) for t in args.threads.split(",")):
        for batch in (int(b) for b in args.batches.split(",")):
            ms = {name: [] for name in models}
            for _ in range(args.rounds):
                for name, model in models.items():
                    time.sleep(args.pause)  # let the previous model's thread pool stop spinning
                    r = step_latency(model, batch_size=batch, threads=threads,
                                     repeats=args.repeats, warmup=2)
                    ms[name].append(r["median_s"] * 1000)
            vs_pt = [a / b for a, b in zip(ms["PyTorch fp32"], ms["ORT int8"])]
            vs_ort = [a / b for a, b in zip(ms["ORT fp32"], ms["ORT int8"])]
            row = (f"| {threads} | {batch} | "
                   + " | ".join(f"{statistics.median(ms[n]):.1f}" for n in models)
                   + f" | {statistics.median(vs_pt):.2f}× [{min(vs_pt):.2f}, {max(vs_pt):.2f}]"
                   f" | {statistics.median(vs_ort):.2f}× |")
            lines.append(row)
            print(row, flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
