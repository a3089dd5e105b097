"""The run store: one folder per recipe run, written atomically, and the runner that fills it.

A run folder (``<store>/<id>``, id = first 12 hex of the recipe key) holds::

    recipe.json     the recipe (plain data)          status.json   done | failed (+ error, times)
    metrics.json    size, latency (best of 3 rounds of median step times, alternating with the
                    base; speed-up = median of the 3 rounds' ratios), FID/KID with
                    interval, SSIM/PSNR to the base, quality gate, stage timings, notes, versions
    layers.csv      per-layer params / channels / sparsity / MACs before and after
    samples.png     a fixed-seed sample grid          model/       the compressed model
    log.jsonl       one line per stage

Runs are built in a hidden ``.tmp-<id>-<pid>`` folder and renamed into place, so a reader never
sees half a run; a run that raises is stored with status ``failed``, its error and no model; a
``.tmp-*`` folder whose process is gone (killed) is listed as ``interrupted`` until the next run in
the store (or ``litediff runs --clean``) removes it. Paths inside a run are relative to its folder.

Training stages keep resumable checkpoints in ``<store>/_checkpoints/<id>/`` while the run is
unfinished: the same recipe run again (after a kill, a failure, a stopped session) resumes each
training stage where its checkpoint left it, to the same result; a recipe's stages that train
with ``curve_every`` store their recovery curves under ``recovery`` in metrics.json.

metrics.json follows one schema, :class:`litediff_core.results.RunResult` (``"schema": 2``;
files without the key are version 1 and migrate on reading): ``RunStore.load(id)["result"]``
is the typed result (``result.size.params``, ``result.fidelity.fid``), ``["metrics"]`` the same
as plain data.

Three modules, by concern: :mod:`.store` (the folders: list, load, delete, clean, the runs
table), :mod:`.runner` (``run_recipe``) and :mod:`.measure` (evaluation, timing as ratios to the
base, re-timing, the per-layer table).
"""

from .measure import (LATENCY_PAUSE_S, LATENCY_ROUNDS, REFERENCE_SAMPLING, base_samples,
                      image_cost_vs_base, image_macs, latency_vs_base, layers, measure,
                      remeasure_latency, unet_calls)
from .runner import run_recipe
from .store import (CHECKPOINTS, COLUMNS, GRID, LAYERS, METRICS, MODEL, RECIPE, STATUS,
                    RunStore, user_store)

__all__ = ["CHECKPOINTS", "COLUMNS", "GRID", "LAYERS", "LATENCY_PAUSE_S", "LATENCY_ROUNDS",
           "METRICS", "MODEL", "RECIPE", "REFERENCE_SAMPLING", "STATUS", "RunStore",
           "base_samples", "image_cost_vs_base", "image_macs", "latency_vs_base", "layers",
           "measure", "remeasure_latency", "run_recipe", "unet_calls", "user_store"]
