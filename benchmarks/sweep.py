"""The compression sweep on the embedded default: every method at 30/50/70 %, KD, low rank and
each quantization path, into a run store, then ``benchmarks/results.md``.

    python benchmarks/sweep.py --store cached_results            # what the dashboard ships
    python benchmarks/sweep.py --store /tmp/runs --n 200 --quick  # a smaller, faster pass

Every figure comes from the run store (``litediff_core.runs``): FID with its bootstrap interval,
SSIM to the base from the same noise, params, MACs, bytes, CPU latency per step and its ratio to
the dense model measured in the same run, fine-tune steps and wall time. Runs already in the
store are reused (same recipe → same key).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from litediff_core.device import cpu_label
from litediff_core.errors import LiteDiffError
from litediff_core.progress import TqdmProgress
from litediff_core.recipes import DENSE_METHOD, Recipe
from litediff_core.runs import RunStore, run_recipe


def recipes(base: str, ft: int, ratios, ev: dict):
    """The sweep, most informative first, so that a pass cut short still covers every family:
    dense, the quantization paths, the main structured importances, unstructured, KD / low rank
    / LoRA, then the remaining pruning variants, the long fresh-student distillations, and the
    slow simulated W4A8."""
    def r(name, stages):
        return Recipe(base=base, stages=stages, eval=ev, name=name)

    def ft_stage():
        return {"stage": "finetune", "config": {"steps": ft}}

    def structured(imp, p, global_pruning=False):
        config = {"ratio": p, "importance": imp}
        if global_pruning:
            config["global_pruning"] = True
        kind = f"global {imp}" if global_pruning else imp
        return r(f"structured {kind} {p:.0%} + FT {ft}",
                 [{"stage": "structured-prune", "config": config}, ft_stage()])

    def unstructured(method, p):
        return r(f"unstructured {method} {p:.0%} + FT {ft}", [
            {"stage": "unstructured-prune", "config": {"ratio": p, "method": method}}, ft_stage()])

    out = [r("dense base", []),
           r("ONNX Runtime int8", [{"stage": "quant-onnx-int8"}]),
           r("ONNX Runtime int8, min/max ranges",
             [{"stage": "quant-onnx-int8", "config": {"calibration": "minmax"}}]),
           r("dynamic int8 (Linear only)", [{"stage": "quant-dynamic"}]),
           r("simulated W8A8", [{"stage": "quant-simulated"}])]
    out += [structured(imp, p) for imp in ("l1", "taylor", "diff-pruning") for p in ratios]
    # the papers' fine-tune lr (2e-4) is meant for 100k steps; within 400, a larger one helps
    out.append(r(f"structured l1 30% + FT {ft} lr 1e-3", [
        {"stage": "structured-prune", "config": {"ratio": 0.3, "importance": "l1"}},
        {"stage": "finetune", "config": {"steps": ft, "lr": 1e-3}}]))
    mid = ratios[len(ratios) // 2]
    out += [unstructured("l1", p) for p in ratios[:2]] + [unstructured("tiny-diffusion", mid)]
    out.append(r(f"KD(BM, Prune(BM, 30%)) {ft}", [
        {"stage": "structured-prune", "config": {"ratio": 0.3}},
        {"stage": "distill", "config": {"steps": ft}}]))
    out.append(r(f"LoRA r=2 on Prune 30% (KD) {ft}", [
        {"stage": "structured-prune", "config": {"ratio": 0.3}},
        {"stage": "lora", "config": {"r": 2, "steps": ft, "kd_frac": 0.7}}]))
    for factor in (2, 4):
        out.append(r(f"low-rank /{factor} + FT {ft}", [
            {"stage": "low-rank", "config": {"factor": factor}}, ft_stage()]))
    out.append(r(f"ONNX int8 of structured l1 50% + FT {ft}", [
        {"stage": "structured-prune", "config": {"ratio": 0.5}}, ft_stage(),
        {"stage": "quant-onnx-int8"}]))
    out += [unstructured("l1", p) for p in ratios[2:]]
    out += [unstructured("tiny-diffusion", p) for p in ratios if p != mid]
    out += [structured("random", p) for p in ratios]
    out += [structured("l1", p, global_pruning=True) for p in ratios]
    out += [unstructured(m, p) for m in ("global", "random") for p in ratios]
    for s in (2, 4):
        out.append(r(f"KD(BM, s={s}) {4 * ft}", [
            {"stage": "distill", "config": {"steps": 4 * ft, "fresh": True, "scale": s}}]))
    # last: fake quantization makes every sampling step several times slower on a CPU
    out.append(r("simulated W4A8", [{"stage": "quant-simulated", "config": {"weight_bits": 4}}]))
    return out


def fmt(x, spec):
    """``x`` formatted (a trailing × in ``spec`` is kept as text), or — when missing."""
    unit = "×" if spec.endswith("×") else ""
    return "—" if x is None or x != x else format(x, spec.rstrip("×")) + unit


def write_results(store: RunStore, path: Path, command: str, todo=()) -> None:
    t = store.table()
    t = t[t["status"] == "done"]
    statuses = {r.name: store.status(store.run_dir(r)) for r in todo}
    failed = {name: s.get("error", "") for name, s in statuses.items()
              if s.get("status") == "failed"}
    not_run = [r.name for r in todo if store.find(r) is None and r.name not in failed]
    order = {r.key()[:12]: i for i, r in enumerate(todo)}  # the sweep's order, extras last
    t = t.assign(order=t["id"].map(order).fillna(len(order))).sort_values(["order", "created"])
    # ΔFID against the dense model at DDIM 50 (other samplers are named in the method) with
    # the same number of samples
    dense = t[t["method"] == DENSE_METHOD]
    base_fid = dict(zip(dense["n"], dense["fid"]))
    results = {r: store.load(r)["result"] for r in t["id"]}
    retimed = sum(bool(r.latency_remeasured) for r in results.values())
    lines = [
        "# Compression sweep on the embedded default model", "",
        f"Command: `{command}`  ", f"Machine: {platform.machine()} ({cpu_label()}), {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}; written {time.strftime('%Y-%m-%d %H:%M')}.", "",
        "FID: classifier features (litediff-fmnist-cnn-v1), not Inception — not comparable to "
        "papers. Latency: median of one denoising step, batch in the eval setup, CPU; "
        "speed-up = base latency / run latency, both measured in the same run. Unstructured "
        "sparsity keeps dense MACs and dense latency.", "",
        *([f"Latency and speed-up of {retimed} of {len(t)} runs were re-timed with the machine "
           f"otherwise idle (`litediff runs --remeasure all --store {store.root}`, which needs "
           f"the run's saved model); their metrics keep the first figures under "
           f"`latency_history`. Runs from an earlier pass keep the figures of the machine that "
           f"ran them (each run's `metrics.json` records its environment).", ""]
          if retimed else []),
        "Per image: the time to draw one image end to end at the run's own sampler and steps "
        "(a batch in the eval setup) and its ratio to the dense model at DDIM 50, timed in "
        "alternating rounds in the same run; runs made before this was measured show —.", "",
        "| run | samples | sampling | FID [95% CI] | ΔFID vs dense DDIM 50 | SSIM to base | params | MACs "
        "| bytes | latency ms (threads) | speed-up per step (median of 3 alternating rounds) | "
        "ms per image | speed-up per image vs dense DDIM 50 | FT steps | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in t.iterrows():
        d = (row["fid"] / base_fid[row["n"]] - 1) if row["n"] in base_fid else None
        lat = results[row["id"]].latency
        lines.append(
            f"| {row['name']} | {row['n']} | "
            f"{row['eval'].split('samples, ')[-1]} | {fmt(row['fid'], '.2f')} "
            f"[{fmt(row['fid_lo'], '.2f')}, "
            f"{fmt(row['fid_hi'], '.2f')}] | {fmt(d, '+.1%')} | {fmt(row['ssim_to_base'], '.3f')}"
            f" | {fmt(row['params'], ',.0f')} | {fmt(row['macs'] / 1e6 if row['macs'] else None, '.1f')} M"
            f" | {fmt(row['bytes'], ',.0f')} | {fmt(row['latency_ms'], '.1f')} "
            f"({lat.threads if lat and lat.threads is not None else '?'}) | "
            f"{fmt(row['speedup'], '.2f')}× | {fmt(row['image_ms'], '.1f')} | "
            f"{fmt(row['image_speedup'], '.2f×')} | "
            f"{fmt(row['train_steps'], '.0f')} | {fmt(row['wall_s'], '.0f')} |")
    if failed:
        lines += ["", "Failed (the error as stored; these are not in the table):", ""]
        lines += [f"- {name}: {error}" for name, error in failed.items()]
    if not_run:
        lines += ["", f"Not run yet ({len(not_run)}; rerun the command: finished runs are reused): "
                  + "; ".join(not_run) + "."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="cached_results")
    p.add_argument("--base", default="embedded")
    p.add_argument("--n", type=int, default=1000, help="evaluation samples per run")
    p.add_argument("--steps", type=int, default=50, help="evaluation DDIM steps")
    p.add_argument("--ft", type=int, default=400, help="fine-tune steps (≤ 10%% of the base's)")
    p.add_argument("--quick", action="store_true", help="only 50%% and fewer methods")
    p.add_argument("--report", action="store_true",
                   help="only rewrite the results file from the store (run nothing)")
    p.add_argument("--reverse", action="store_true",
                   help="last recipe first: a second process on the same store meets the first "
                        "in the middle (each finished run is reused by the other)")
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="run only the recipes whose name contains TEXT (repeatable); the "
                        "results file still lists the whole sweep")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="benchmarks/results.md")
    args = p.parse_args(argv)
    ratios = (0.5,) if args.quick else (0.3, 0.5, 0.7)
    store = RunStore(args.store)
    ev = {"n": args.n, "steps": args.steps}
    todo = recipes(args.base, args.ft, ratios, ev)
    argv = sys.argv[1:] if argv is None else argv
    shown, rest = [], iter(argv)  # the command that makes the whole table
    for a in rest:
        if a == "--only":
            next(rest, None)
        elif a not in ("--reverse", "--report") and not a.startswith("--only="):
            shown.append(a)
    command = "python benchmarks/sweep.py " + " ".join(shown)
    if args.report:
        todo_run = []
    else:
        todo_run = reversed(list(enumerate(todo))) if args.reverse else enumerate(todo)
    for i, recipe in todo_run:
        if args.only and not any(text in recipe.name for text in args.only):
            continue
        print(f"[{i + 1}/{len(todo)}] {recipe.name}", file=sys.stderr)
        try:
            run_recipe(recipe, store, progress=TqdmProgress(recipe.name[:30]), device=args.device)
        except LiteDiffError as e:
            print(f"  failed: {e}", file=sys.stderr)
        write_results(store, Path(args.out), command, todo)  # after every run: a cut pass still reports
    write_results(store, Path(args.out), command, todo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
