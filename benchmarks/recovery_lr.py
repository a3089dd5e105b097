"""Which learning rate, warm-up and feature term recover a pruned model fastest: a grid of short
distillations of the same pruned student, into a run store, then ``benchmarks/recovery_lr.md``.

    nice python benchmarks/recovery_lr.py --store runs/recovery-lr            # run (resumes)
    python benchmarks/recovery_lr.py --store runs/recovery-lr --cells 2       # the first two
    python benchmarks/recovery_lr.py --store runs/recovery-lr --report        # only the table
    python benchmarks/recovery_lr.py --store runs/recovery-lr --cells 2 --steps 2000 \
        --every 500 --eval-n 1000 --out benchmarks/recovery_lr-2000.md   # the long A/B

The student: the embedded default pruned by Diff-Pruning 30 % (global, the first row of
``recovery.md``), distilled as there (0.7 teacher + 0.3 true noise, EMA 0.995, batch 32) for
``--steps`` steps at each learning rate × warm-up of the grid, with a recovery-curve point every
``--every`` steps, each without and (at the default schedule) with the feature term
(``feature_kd`` = ``FEATURE_KD``: attention maps of every block matched to the teacher's). The
first two cells are the default and the default with the feature term. The figure that decides is the ε-MSE to the teacher on 256 held-out test
images (precise at any step; the 200-sample FID of the curve is also shown, with its interval).
Same seed, same images and noise for every cell: only the schedule differs. Resumable: runs
already in the store are reused, an unfinished one continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from litediff_core.device import cpu_label
from litediff_core.errors import LiteDiffError
from litediff_core.progress import TqdmProgress
from litediff_core.recipes import Recipe
from litediff_core.runs import RunStore, run_recipe

LRS = (3e-4, 1e-3, 3e-3)
WARMUPS = (0, 100)
FEATURE_KD = 1.0
PRUNE = {"stage": "structured-prune", "config": {"ratio": 0.3, "importance": "diff-pruning",
                                                 "global_pruning": True}}


def recipe(lr: float, warmup: int, feature_kd: float, steps: int, every: int,
           eval_n: int = 50) -> Recipe:
    distill = {"stage": "distill", "config": {
        "steps": steps, "lr": lr, "warmup": warmup, "batch_size": 32, "kd_frac": 0.7,
        "feature_kd": feature_kd, "ema": True, "ema_decay": 0.995, "curve_every": every}}
    features = f", feature KD {feature_kd:g}" if feature_kd else ""
    return Recipe(base="embedded", stages=[PRUNE, distill], eval={"n": eval_n, "steps": 50},
                  name=f"lr {lr:g}, warm-up {warmup}{features}: DP 30 % global + KD {steps}")


def grid(steps: int, every: int, eval_n: int = 50):
    """(lr, warm-up, feature_kd, recipe) of every cell: the current default (lr 1e-3, no
    warm-up, no feature term) first, then the same with the feature term, then the schedules."""
    cells = [(1e-3, 0, 0.0), (1e-3, 0, FEATURE_KD)] + [
        (lr, w, 0.0) for lr in LRS for w in WARMUPS if (lr, w) != (1e-3, 0)]
    return [(lr, w, f, recipe(lr, w, f, steps, every, eval_n)) for lr, w, f in cells]


def _curve(store: RunStore, r: Recipe):
    """(status, curve points, final fidelity or None) of a recipe: finished, unfinished (from
    its checkpoint) or not started."""
    run_id = store.run_dir(r).name
    if store.find(r):
        result = store.load(run_id)["result"]
        curves = result.recovery or []
        return "done", (curves[-1].points or []) if curves else [], result.fidelity
    from litediff_core.compress._checkpoint import read_state

    folder = store.checkpoint_dir(run_id)
    states = [s for s in (read_state(d) for d in sorted(folder.iterdir())) if s] \
        if folder.is_dir() else []
    if states:
        return f"unfinished (step {states[-1]['step']})", states[-1].get("curve", []), None
    return "not started", [], None


def write_report(store: RunStore, cells, path: Path, command: str, steps: int, every: int,
                 eval_n: int = 50):
    marks = list(range(every, steps + 1, every))
    lines = ["# Learning rate, warm-up and feature KD for recovery (embedded default)", "",
             f"Command: `{command}`  ",
             f"Machine: {cpu_label()}; written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "Student: structured Diff-Pruning 30 % (global) of the embedded default, distilled "
             "from the dense teacher (0.7 teacher + 0.3 true noise, EMA 0.995, batch 32, seed 0)"
             f" for {steps} steps; only the learning rate, the linear warm-up and the "
             f"feature term (attention maps of every down / mid / up block matched to the "
             f"teacher's, weight `feature_kd`) differ. "
             "ε-MSE: to the dense teacher's prediction on 256 held-out test images (lower is "
             "better). FID: 200 samples, DPM-Solver++ 10 steps, classifier features, 95 % "
             f"bootstrap interval. Final FID: the run's own evaluation of the finished model, "
             f"{eval_n} samples, DDIM 50 steps, same features.", "",
             "| lr | warm-up | feature_kd | status | "
             + " | ".join(f"ε-MSE@{m}" for m in marks)
             + f" | FID@{steps} [95% CI] | final FID ({eval_n} samples) [95% CI] | train time |",
             "|---:|---:|---:|---|" + "---:|" * len(marks) + "---|---|---:|"]
    best = None
    for lr, warmup, feature_kd, r in cells:
        status, points, final = _curve(store, r)
        by_step = {p["step"]: p for p in points}
        mse = [by_step.get(m, {}).get("eps_mse_teacher") for m in marks]
        last = by_step.get(steps)
        fid = (f"{last['fid']:.1f} [{last['fid_lo']:.1f}, {last['fid_hi']:.1f}]"
               if last and last.get("fid") is not None else "")
        train = f"{points[-1]['train_s'] / 60:.0f} min" if points else ""
        final_fid = (f"{final.fid:.1f} [{final.fid_lo:.1f}, {final.fid_hi:.1f}]"
                     if final and final.fid is not None and final.fid_ci95 else "")
        lines.append(f"| {lr:g} | {warmup} | {feature_kd:g} | {status} | "
                     + " | ".join(f"{v:.5f}" if v is not None else "" for v in mse)
                     + f" | {fid} | {final_fid} | {train} |")
        if mse[-1] is not None and (best is None or mse[-1] < best[3]):
            best = (lr, warmup, feature_kd, mse[-1])
    lines.append("")
    lines.append(f"Lowest ε-MSE to the teacher at step {steps}: lr {best[0]:g}, warm-up "
                 f"{best[1]}, feature_kd {best[2]:g} ({best[3]:.5f})." if best
                 else "No cell has finished yet.")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="runs/recovery-lr")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--eval-n", type=int, default=50, help="samples of the finished model's "
                   "own evaluation (DDIM 50; 1000 for a FID worth comparing)")
    p.add_argument("--cells", type=int, default=0, help="run only the first this many cells "
                   "(0: all; the report lists every cell)")
    p.add_argument("--report", action="store_true", help="only rewrite recovery_lr.md")
    p.add_argument("--out", default=str(Path(__file__).with_name("recovery_lr.md")))
    args = p.parse_args(argv)
    store = RunStore(args.store)
    cells = grid(args.steps, args.every, args.eval_n)
    command = "python benchmarks/recovery_lr.py " + " ".join(argv or sys.argv[1:])
    try:
        if not args.report:
            for lr, warmup, feature_kd, r in cells[:args.cells or None]:
                print(f"==> lr {lr:g}, warm-up {warmup}, feature_kd {feature_kd:g}", flush=True)
                run_recipe(r, store, progress=TqdmProgress(f"lr {lr:g} w{warmup} f{feature_kd:g}"),
                           device="cpu")
                write_report(store, cells, Path(args.out), command, args.steps, args.every,
                             args.eval_n)
        write_report(store, cells, Path(args.out), command, args.steps, args.every, args.eval_n)
    except LiteDiffError as e:
        print(f"recovery_lr: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
