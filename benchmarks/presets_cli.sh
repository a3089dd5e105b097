#!/usr/bin/env bash
# Every preset end to end on the embedded default, from the CLI, at a small budget (a check that
# each runs, not a quality figure): 20 training steps, 32 samples, DDIM 10 steps.
#   bash benchmarks/presets_cli.sh [store]        (default store: a new temporary folder)
# Writes the run table to benchmarks/presets_cli.md.
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=${1:-$(mktemp -d)}
LITEDIFF=${LITEDIFF:-litediff}
presets=$(python -c "from litediff_core.presets import PRESETS; print(' '.join(PRESETS))")
for p in $presets; do
  echo "==> $p"
  $LITEDIFF compress --preset "$p" --base embedded --p 0.3 --steps 20 --n 32 --eval-steps 10 \
    --store "$STORE" 2>&1 | tail -n 2
done
{
  echo "# Every preset on the embedded default, from the CLI"
  echo
  echo "Command: \`bash benchmarks/presets_cli.sh\` (20 training steps, 32 samples, DDIM 10 steps:"
  echo "a check that every preset runs end to end, not a quality figure); $(date -u +%F)."
  echo "Presets whose recipes are identical share one run (same key): $(echo $presets | wc -w)"
  echo "presets, one row per distinct recipe."
  echo
  python - "$STORE" <<'PY'
import sys
from litediff_core.runs import RunStore
t = RunStore(sys.argv[1]).table()
cols = ["name", "method", "status", "params", "macs", "bytes", "speedup", "fid", "train_steps",
        "wall_s", "error"]
print(t[cols].to_markdown(index=False, floatfmt=".3g"))
PY
} > benchmarks/presets_cli.md
cat benchmarks/presets_cli.md
