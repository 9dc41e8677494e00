#!/usr/bin/env bash
# The replays behind benchmarks/RESULTS.md's "Search strategies on the Fashion-MNIST table":
# every built-in strategy at three budgets, the ASHA settings, and the Pareto variant.
# Usage: benchmarks/bench_replays.sh [TABLE] [OUT_DIR]   (about 15 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
TABLE=${1:-benchmarks/tables/fashion_mnist_bench.db.gz}
OUT=${2:-benchmarks/replay}
RKNAS=${RKNAS:-.venv/bin/rknas}
mkdir -p "$OUT"
for budget in 900 1800 3600; do
  "$RKNAS" bench replay --table "$TABLE" --budget $budget --workers 2 --repeats 50 --out "$OUT/strategies_${budget}s"
done
for mr in "1 2" "1 3" "2 2"; do
  set -- $mr
  "$RKNAS" bench replay --table "$TABLE" --budget 1800 --workers 2 --repeats 50 --strategy random+asha,tpe+asha,tpe+asha+warm \
    --min-epochs "$1" --reduction-factor "$2" --out "$OUT/asha_min$1_rf$2"
done
"$RKNAS" bench replay --table "$TABLE" --budget 1800 --workers 2 --repeats 50 --pareto --out "$OUT/pareto_1800s"
"$RKNAS" bench proxies --table "$TABLE" --out "$OUT/proxies.json"
