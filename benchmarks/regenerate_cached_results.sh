#!/usr/bin/env bash
# Regenerate what the dashboard ships in cached_results/, on the embedded default, in one command:
#   bash benchmarks/regenerate_cached_results.sh
# 1. the compression sweep (every method at 30/50/70 %, KD, low rank, quantization; 200 samples,
#    DDIM 50; 400 fine-tune steps) → benchmarks/results.md
# 2. the recovery runs (distillation from the dense teacher, 4,000 steps, recovery curves,
#    1,000-sample FIDs) → benchmarks/recovery.md
# 3. every run's latency re-timed in one idle pass (ratios to the dense model in one process),
#    then both reports rewritten from the store.
# Runs already in the store are reused and killed runs resume, so rerun it after any stop. Hours
# on a 2-core CPU; keep the machine otherwise idle for the timings of step 3. The weights of the
# runs on the Pareto front ship with the repository (see .gitignore), the others stay local.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STORE=cached_results
$PY benchmarks/sweep.py --store "$STORE" --n 200 --ft 400
nice $PY benchmarks/recovery.py --store "$STORE"
$PY -m litediff_core.cli runs --remeasure all --store "$STORE"
$PY benchmarks/sweep.py --store "$STORE" --n 200 --ft 400 --report
$PY benchmarks/recovery.py --store "$STORE" --report
