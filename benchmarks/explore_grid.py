"""The Explore page's precomputed grid: every setting of ``litediff_core.explore.shipped_grid``
run into a store (default ``cached_results``), so that a fresh install shows those settings at
once, without a job.

    python benchmarks/explore_grid.py                 # run what is missing, cheapest first
    python benchmarks/explore_grid.py --list          # what the grid holds and what is missing

Each setting is the recipe the Explore page builds from its controls (``recipe_of``) with the
grid's evaluation (200 samples, DDIM 50 unless the setting changes the sampler or steps, latency
batch 16), so a setting on the grid finds its run by key. Runs already in the store are reused,
so a pass cut short resumes where it stopped. Latency is measured as each run finishes: run it
with the machine otherwise idle (``litediff runs --remeasure ID --store cached_results`` times a
run again).
"""

from __future__ import annotations

import argparse
import sys
import time

from litediff_core.errors import LiteDiffError
from litediff_core.explore import GRID_EVAL, recipe_of, shipped_grid
from litediff_core.progress import TqdmProgress
from litediff_core.runs import RunStore, run_recipe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default="cached_results")
    p.add_argument("--base", default="embedded")
    p.add_argument("--list", action="store_true", help="only list the grid and what is missing")
    args = p.parse_args(argv)
    store = RunStore(args.store)
    grid = [(why, recipe_of(c, GRID_EVAL)) for why, c in shipped_grid(args.base)]
    missing = [(why, r) for why, r in grid if store.find(r) is None]
    for why, recipe in grid:
        d = store.find(recipe)
        print(f"{d.name if d else 'missing     '}  {why:<52} {recipe.method()}")
    print(f"{len(grid) - len(missing)} of {len(grid)} settings stored in {args.store}")
    if args.list:
        return 0
    failed = 0
    for i, (why, recipe) in enumerate(missing):
        t0 = time.time()
        print(f"[{i + 1}/{len(missing)}] {why}: {recipe.method()}", flush=True)
        try:
            run_recipe(recipe, store, progress=TqdmProgress(recipe.method()), device="cpu")
            print(f"  done in {time.time() - t0:.0f} s", flush=True)
        except LiteDiffError as e:
            failed += 1
            print(f"  failed: {e}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
