"""Time as a compression axis: sampler × steps × feature caching × model, on the embedded
default, into a run store, then ``benchmarks/time_axis.md``.

    python benchmarks/time_axis.py --store cached_results            # the shipped grid
    python benchmarks/time_axis.py --store cached_results --report   # only rewrite the table
    python benchmarks/time_axis.py --store cached_results --retime   # time every run again
    python benchmarks/time_axis.py --store cached_results --recovered 8932f488976d
    python benchmarks/time_axis.py --store cached_results --models none --retime \
        --recovered 8932f488976d,aabfeed0a1df                    # time those rows again

Every row is a stored run (``litediff_core.runs``): FID on ``--n`` samples with its bootstrap
interval, the quality gate, SSIM to the dense base at DDIM 50 from the same noise, the time to
draw one image at the run's own sampler, steps and caching against the dense model at DDIM 50
(alternating rounds in one process), and the MACs of one image (steps × MACs per step, cached
steps counted as the shallow part they run). Runs already in the store are reused (same recipe
→ same key), so a pass cut short resumes where it stopped. Time the grid with the machine
otherwise idle (``--retime`` redoes the timings alone).

``--recovered RUN`` adds rows for a stored run's compressed model (e.g. the structured model
that ``benchmarks/recovery.py`` recovered by distillation) at other samplers, steps and caching,
measured the same way against the dense base: its weights are loaded from the run, not trained
again. Those rows are kept in ``time_axis-recovered.json`` beside the report (the model's
training is in its own run), and every later report shows them unless ``--recovered`` names
other runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional

from litediff_core.device import cpu_label
from litediff_core.errors import LiteDiffError
from litediff_core.progress import TqdmProgress
from litediff_core.recipes import Recipe
from litediff_core.results import Fidelity, PerImage
from litediff_core.runs import RunStore, run_recipe

# (sampler, steps, cache interval), most informative first: a pass cut short (each run costs
# minutes on 2 cores) still shows fewer steps, caching, and both together
DENSE = [("dpm-solver++", 10, None), ("dpm-solver++", 10, 2), ("dpm-solver++", 10, 3),
         ("dpm-solver++", 5, None), ("ddim", 50, 2), ("ddim", 50, 3), ("dpm-solver++", 20, None),
         ("dpm-solver++", 10, 5), ("dpm-solver++", 5, 2), ("ddim", 20, None), ("ddim", 10, None),
         ("ddim", 50, 5), ("dpm-solver++", 20, 2), ("dpm-solver++", 20, 3), ("ddim", 20, 2),
         ("ddim", 20, 3), ("ddim", 10, 2), ("ddim", 5, None), ("dpm-solver++", 50, None),
         ("ddim", 50, None)]
INT8 = [{"stage": "quant-onnx-int8"}]
STRUCTURED = [{"stage": "structured-prune", "config": {"ratio": 0.3, "importance": "diff-pruning",
                                                       "global_pruning": True}},
              {"stage": "finetune", "config": {"steps": 400, "lr": 1e-3, "ema": True,
                                               "ema_decay": 0.995}}]


def recipes(base: str, n: int, models) -> list:
    """Most informative first: the dense model's sampler × steps × caching (``DENSE``), then the
    int8 model's samplers, then the recovered structured model's (each of those recipes
    fine-tunes again: slow)."""
    def r(stages, sampler, steps, cache=None):
        if cache:
            stages = stages + [{"stage": "deepcache", "config": {"interval": cache}}]
        return Recipe(base=base, stages=stages, eval={"n": n, "sampler": sampler, "steps": steps})

    dense = [r([], s, k, c) for s, k, c in DENSE] if "dense" in models else []
    int8 = [r(INT8, s, k) for s, k in (("dpm-solver++", 10), ("dpm-solver++", 20),
                                       ("ddim", 50), ("ddim", 20))] if "int8" in models else []
    out = dense[:8] + int8[:1] + dense[8:] + int8[1:]
    if "structured" in models:
        out += [r(STRUCTURED, "dpm-solver++", 10, c) for c in (None, 2)]
        out += [r(STRUCTURED, "ddim", 50)]
    return out


def _model(recipe: Recipe) -> str:
    names = [s["stage"] for s in recipe.stages if s["stage"] != "deepcache"]
    if not names:
        return "dense"
    return "int8 (ONNX)" if "quant-onnx-int8" in names else "structured 30% + FT 400"


def _fmt(x, spec, missing="–"):
    return missing if x is None else format(x, spec)


def busy(row) -> str:
    """A mark for per-image timings not known to come from an otherwise idle machine: no load
    recorded, or a 1-minute load average above the timing process's own threads + 1 (PyTorch's
    threads count in the load average themselves: 2 on this machine when nothing else runs)."""
    if row["image_ms"] is None:
        return ""
    threads = row.get("threads") or os.cpu_count() or 1
    return " (busy)" if row["load"] is None or row["load"] > threads + 1.0 else ""


# (sampler, steps, DeepCache interval, runtime): "onnx" runs the same weights in ONNX Runtime
# fp32 (the runtime-onnx stage: same numbers, another engine)
RECOVERED_GRID = [("dpm-solver++", 5, None, None), ("dpm-solver++", 6, None, None),
                  ("dpm-solver++", 7, None, None), ("dpm-solver++", 8, None, None),
                  ("dpm-solver++", 10, None, None), ("dpm-solver++", 7, None, "onnx"),
                  ("dpm-solver++", 8, None, "onnx"), ("dpm-solver++", 10, None, "onnx"),
                  ("dpm-solver++", 10, 2, None), ("ddim", 50, None, None)]


def _wrapped(model, cache, runtime):
    """The run's model with DeepCache ``cache`` or in ONNX Runtime (``runtime="onnx"``)."""
    from litediff_core.compress import DeepCacheUNet
    from litediff_core.compress.runtime_onnx import onnx_runtime_unet

    unet = model.unet
    if cache:
        unet = DeepCacheUNet(unet, cache, 0).eval()
    if runtime == "onnx":
        unet = onnx_runtime_unet(unet)
    return type(model)(unet=unet, scheduler=model.scheduler, meta=model.meta)


def measure_recovered(store: RunStore, run_id: str, n: int, path: Path) -> list:
    """Rows for run ``run_id``'s saved model at each RECOVERED_GRID setting: FID / gate on ``n``
    samples, SSIM to the dense base at DDIM 50, and time and MACs per image against the dense
    base at DDIM 50 (alternating rounds), as a stored run is measured. Kept in ``path`` (JSON),
    reused unless the run's model changed."""
    import json

    from litediff_core.evaluate import EvalConfig, evaluate
    from litediff_core.metrics import ssim_psnr
    from litediff_core.models import load_base
    from litediff_core.runs import REFERENCE_SAMPLING, base_samples, image_cost_vs_base
    from litediff_core.samplers import generate

    run = store.load(run_id)
    recipe = Recipe.from_dict(run["recipe"])
    done = json.loads(path.read_text()) if path.exists() else {}
    others = [r for r in done.get("rows", []) if r.get("run") != run_id]  # other runs' rows
    rows = [r for r in done.get("rows", []) if r.get("run") == run_id]
    base = load_base(recipe.base)
    model = load_base(str(store.root / run_id / "model"))
    model.meta.dataset = base.meta.dataset
    for sampler, steps, cache, runtime in RECOVERED_GRID:
        if any((r["sampler"], r["steps"], r["cache"], r.get("runtime")) ==
               (sampler, steps, cache, runtime) for r in rows):
            continue
        print(f"  {run_id}: {sampler} {steps} steps, DeepCache {cache or 'off'}, "
              f"{runtime or 'PyTorch'}", flush=True)
        wrapped = _wrapped(model, cache, runtime)
        unet = wrapped.unet
        cfg = EvalConfig(n=n, sampler=sampler, steps=steps, seed=0, device="cpu")
        result = evaluate(wrapped, cfg, progress=TqdmProgress(f"{sampler} {steps}"))
        per = image_cost_vs_base(base, wrapped, cfg, "cpu")
        images = generate(unet, dict(model.scheduler.config), sampler=sampler, steps=steps,
                          n=256, seed=0, device="cpu")
        ref = base_samples(base, REFERENCE_SAMPLING["sampler"], REFERENCE_SAMPLING["steps"], 256,
                           0, "cpu", cache=store.root / "_cache")
        fid = result["fidelity"]
        rows.append({"run": run_id, "sampler": sampler, "steps": steps, "cache": cache,
                     "runtime": runtime,
                     "fid": fid["fid"], "ci": fid["fid_ci95"],
                     "gate": result["quality_gate"]["passes"],
                     "ssim": ssim_psnr(images, ref)["ssim_mean"],
                     "image_ms": per.seconds * 1000, "image_speedup": per.speedup,
                     "gmacs": per.macs / 1e9, "load": per.load_average,
                     "threads": per.threads,
                     "cpu": cpu_label()})
        path.write_text(json.dumps({"rows": others + rows}, indent=2))
    return rows


def retime_recovered(store: RunStore, run_id: str, path: Path) -> list:
    """Time run ``run_id``'s stored rows again against the dense base (e.g. once the machine is
    quiet): only the per-image timings change; the previous ones are kept under ``history``."""
    import json

    from litediff_core.evaluate import EvalConfig
    from litediff_core.models import load_base
    from litediff_core.runs import image_cost_vs_base

    done = json.loads(path.read_text()) if path.exists() else {"rows": []}
    run = store.load(run_id)
    base = load_base(Recipe.from_dict(run["recipe"]).base)
    model = load_base(str(store.root / run_id / "model"))
    for row in (r for r in done["rows"] if r.get("run") == run_id):
        print(f"  timing {run_id}: {row['sampler']} {row['steps']} steps, DeepCache "
              f"{row['cache'] or 'off'}", flush=True)
        wrapped = _wrapped(model, row["cache"], row.get("runtime"))
        cfg = EvalConfig(n=16, sampler=row["sampler"], steps=row["steps"], seed=0, device="cpu")
        per = image_cost_vs_base(base, wrapped, cfg, "cpu")
        keep = {k: row.get(k) for k in ("image_ms", "image_speedup", "load", "threads", "cpu")}
        row.setdefault("history", []).append(keep)
        row.update(image_ms=per.seconds * 1000, image_speedup=per.speedup,
                   load=per.load_average, threads=per.threads, cpu=cpu_label())
        path.write_text(json.dumps(done, indent=2))
    return [r for r in done["rows"] if r.get("run") == run_id]


def write_report(store: RunStore, recipes_, path: Path, command: str,
                 recovered: tuple = ()) -> None:
    rows, reference = [], None
    for recipe in recipes_:
        d = store.find(recipe)
        if d is None:
            continue
        m = store.load(d.name)["result"]
        per, fid = m.per_image or PerImage(), m.fidelity or Fidelity()
        cache = next((s["config"]["interval"] for s in recipe.stages if s["stage"] == "deepcache"),
                     None)
        row = {"id": d.name, "model": _model(recipe), "sampler": recipe.eval["sampler"],
               "steps": recipe.eval["steps"], "cache": cache, "fid": fid.fid,
               "ci": [fid.fid_lo, fid.fid_hi],
               "gate": m.quality_gate.passes if m.quality_gate else None,
               "ssim": m.consistency.ssim_mean if m.consistency else None,
               "image_ms": (per.seconds or 0) * 1000 or None,
               "image_speedup": per.speedup, "gmacs": (per.macs or 0) / 1e9 or None,
               "step_speedup": m.speedup, "cpu": (m.environment and m.environment.cpu) or "",
               "load": per.load_average, "threads": per.threads}
        if (row["model"], row["sampler"], row["steps"], row["cache"]) == ("dense", "ddim", 50, None):
            reference = row
            row["image_speedup"] = row["image_speedup"] or 1.0   # the reference itself
        rows.append(row)
    for run_id, extra in recovered:  # a recovered model's rows, measured by measure_recovered
        step = (store.load(run_id)["result"].speedup if (store.root / run_id).is_dir() else None)
        train = store.load(run_id)["result"].train_steps
        for r in extra:
            rows.append({**r, "id": run_id,
                         "step_speedup": None if r.get("runtime") else step,  # PyTorch's
                         "model": f"recovered structured (run {run_id}, {train} training steps)"
                                  + (", ONNX Runtime fp32" if r.get("runtime") == "onnx" else "")})
    lines = [
        "# Time as a compression axis (embedded default)", "",
        f"Written by: `{command}`. Rows made by `python benchmarks/time_axis.py --store "
        f"cached_results` (the dense and int8 grid) and `--models none --recovered RUN` (a "
        f"recovered model's rows; `--retime` times them again)  ",
        f"Machine: {cpu_label()}, PyTorch on the CPU, 2 threads  ",
        f"Written {time.strftime('%Y-%m-%d %H:%M')}. FID: classifier features "
        f"(litediff-fmnist-cnn-v1), {recipes_[0].eval['n'] if recipes_ else ''} samples, seed 0, "
        f"bootstrap 95% interval; SSIM to the dense model at DDIM 50 from the same noise (256 "
        f"samples). Time per image: a batch of 16 drawn end to end, ratio to the dense model at "
        f"DDIM 50 timed in alternating rounds in the same process. MACs per image: every UNet "
        f"call of the trajectory (DeepCache's cached steps run only the shallow part). "
        f"**(busy)**: timed while other jobs ran (1-minute load average above the timing "
        f"process's own threads + 1, or not recorded): PyTorch's thread pool slows several-fold then, so those ratios are not to "
        f"be trusted; `--retime` redoes them.", "",
        "| model | sampler | steps | DeepCache | FID [95% CI] | gate | SSIM to dense DDIM 50 "
        "| ms / image | speed-up / image | GMACs / image | speed-up / step |",
        "|---|---|---:|---:|---|:-:|---:|---:|---:|---:|---:|"]
    for row in rows:
        ci = row["ci"]
        lines.append(
            f"| {row['model']} | {row['sampler']} | {row['steps']} | "
            f"{_fmt(row['cache'], 'd', 'off')} | {_fmt(row['fid'], '.1f')} "
            f"[{_fmt(ci[0], '.1f')}, {_fmt(ci[1], '.1f')}] | "
            f"{'pass' if row['gate'] else 'fail' if row['gate'] is False else '–'} | "
            f"{_fmt(row['ssim'], '.3f')} | {_fmt(row['image_ms'], '.1f')} | "
            f"{_fmt(row['image_speedup'], '.2f')}×{busy(row)} | {_fmt(row['gmacs'], '.2f')} | "
            f"{_fmt(row['step_speedup'], '.2f')}× |")
    lines.append("")
    if reference and reference["fid"]:
        limit = 1.10 * reference["fid"]
        hits = [r for r in rows if r["fid"] and r["fid"] <= limit and (r["image_speedup"] or 0) >= 10]
        best = max((r for r in rows if r["fid"] and r["fid"] <= limit),
                   key=lambda r: r["image_speedup"] or 0, default=None)
        lines.append(f"**Target** (≥ 10× per image over dense DDIM 50 at FID ≤ +10%, i.e. ≤ "
                     f"{limit:.1f}): " + (
                         "reached by " + "; ".join(
                             f"{r['model']} {r['sampler']} {r['steps']} steps, DeepCache "
                             f"{_fmt(r['cache'], 'd', 'off')} ({r['image_speedup']:.1f}×{busy(r)}, FID "
                             f"{r['fid']:.1f} [{r['ci'][0]:.1f}, {r['ci'][1]:.1f}] against the "
                             f"dense {reference['fid']:.1f} [{reference['ci'][0]:.1f}, "
                             f"{reference['ci'][1]:.1f}])" for r in hits)
                         if hits else "not reached" + (
                             f"; the fastest within +10% is {best['model']} {best['sampler']} "
                             f"{best['steps']} steps, DeepCache {_fmt(best['cache'], 'd', 'off')}: "
                             f"{best['image_speedup']:.1f}×{busy(best)} at FID {best['fid']:.1f}"
                             if best else "")))
    else:
        lines.append("The dense DDIM 50 reference run is not in the store yet.")
    if any(r.get("runtime") == "onnx" for r in rows):
        lines += ["", "*ONNX Runtime fp32* rows run the same weights in ONNX Runtime instead of "
                  "PyTorch (the `runtime-onnx` stage): the samples and FIDs equal PyTorch's up to "
                  "float rounding; only the time changes. Their per-step speed-up is left out "
                  "(the run's own figure is PyTorch's)."]
    missing = [r for r in recipes_ if store.find(r) is None]
    if missing:
        lines += ["", f"Not run yet ({len(missing)}): " + "; ".join(r.method() for r in missing)]
    path.write_text("\n".join(lines) + "\n")


def _stored_rows(path: Path, run_id: Optional[str]) -> list:
    """The rows kept for recovered run ``run_id`` (every run's for None)."""
    import json

    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    return [r for r in rows if run_id is None or r.get("run") == run_id]


def retime(store: RunStore, recipes_, busy_only: bool = False) -> None:
    """Time the stored runs of ``recipes_`` again (only those marked busy: ``busy_only``)."""
    from litediff_core.runs import remeasure_latency

    bases = {}
    for recipe in recipes_:
        d = store.find(recipe)
        if busy_only and d is not None:
            per = store.load(d.name)["result"].per_image or PerImage()
            if not busy({"image_ms": per.seconds, "load": per.load_average,
                         "threads": per.threads}):
                continue
        if d is not None and (d / "model").is_dir():
            print(f"retiming {d.name}: {recipe.method()}", flush=True)
            remeasure_latency(store, d.name, device="cpu", bases=bases,
                              progress=TqdmProgress(f"timing {d.name}"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="cached_results")
    p.add_argument("--base", default="embedded")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--models", default="dense,int8,structured")
    p.add_argument("--report", action="store_true", help="only rewrite time_axis.md")
    p.add_argument("--retime", action="store_true", help="time the stored runs again")
    p.add_argument("--busy-only", action="store_true",
                   help="with --retime: only the runs whose timing is marked (busy)")
    p.add_argument("--recovered", default="", help="stored run(s) whose compressed model gets "
                   "rows at other samplers / steps / caching (comma-separated ids)")
    p.add_argument("--out", default=str(Path(__file__).with_name("time_axis.md")))
    args = p.parse_args(argv)
    store = RunStore(args.store)
    todo = recipes(args.base, args.n, args.models.split(","))
    command = "python benchmarks/time_axis.py " + " ".join(argv or sys.argv[1:])
    extra_path = Path(args.out).with_name("time_axis-recovered.json")
    # rows measured earlier for recovered models stay in the report unless others are named
    kept = _stored_rows(extra_path, None)
    stored = tuple((run_id, [r for r in kept if r["run"] == run_id])
                   for run_id in dict.fromkeys(r["run"] for r in kept))
    try:
        if args.retime and args.models != "none":
            retime(store, todo, args.busy_only)
        elif not args.report:
            for i, recipe in enumerate(todo):
                print(f"[{i + 1}/{len(todo)}] {recipe.method()}", flush=True)
                try:
                    run_recipe(recipe, store, progress=TqdmProgress(recipe.method()), device="cpu")
                except LiteDiffError as e:
                    print(f"  failed: {e}", flush=True)
                write_report(store, todo, Path(args.out), command, stored)

        def rows_of(run_id):
            if args.report:
                return _stored_rows(extra_path, run_id)
            if args.retime:
                return retime_recovered(store, run_id, extra_path)
            return measure_recovered(store, run_id, args.n, extra_path)

        recovered = tuple((run_id, rows_of(run_id))
                          for run_id in filter(None, args.recovered.split(","))) or stored
        write_report(store, todo, Path(args.out), command, recovered)
    except LiteDiffError as e:
        print(f"time_axis: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
