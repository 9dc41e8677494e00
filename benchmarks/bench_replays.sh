#!/usr/bin/env bash
# The replays behind benchmarks/RESULTS.md's "Search strategies on the Fashion-MNIST table":
# every built-in strategy at two budgets (and with a 1-point target), two ASHA settings, the
# Pareto variant at two budgets, an independent confirmation of the default against random search
# (other seeds, 100 repeats), and the zero-cost proxies. About 30 minutes on 2 idle cores.
# Usage: benchmarks/bench_replays.sh [TABLE] [OUT_DIR] [JUDGE]   (JUDGE: unseen, the default, or all)
set -euo pipefail
cd "$(dirname "$0")/.."
TABLE=${1:-benchmarks/tables/fashion_mnist_bench.db.gz}
OUT=${2:-benchmarks/replay}
RKNAS=${RKNAS:-.venv/bin/rknas}
JUDGE=${3:-unseen}
mkdir -p "$OUT"
for budget in 900 3600; do
  "$RKNAS" bench replay --judge "$JUDGE" --table "$TABLE" --budget $budget --workers 2 --repeats 50 --out "$OUT/strategies_${budget}s"
done
"$RKNAS" bench replay --judge "$JUDGE" --table "$TABLE" --budget 3600 --workers 2 --repeats 50 --target 0.01 --out "$OUT/strategies_3600s_1pt"
for mr in "1 3" "2 2"; do
  set -- $mr
  "$RKNAS" bench replay --judge "$JUDGE" --table "$TABLE" --budget 900 --workers 2 --repeats 50 --strategy random+asha,tpe+asha \
    --min-epochs "$1" --reduction-factor "$2" --out "$OUT/asha_min$1_rf$2_900s"
done
"$RKNAS" bench replay --judge "$JUDGE" --table "$TABLE" --budget 900 --workers 2 --repeats 50 --pareto --out "$OUT/pareto_900s"
"$RKNAS" bench replay --judge "$JUDGE" --table "$TABLE" --budget 3600 --workers 2 --repeats 50 --pareto \
  --strategy random,tpe,nsga2,tpe+warm,nsga2+warm --out "$OUT/pareto_3600s"
"$RKNAS" bench replay --judge "$JUDGE" --table "$TABLE" --budget 3600 --workers 2 --repeats 100 --seed 1000 \
  --strategy random,tpe+asha+warm --out "$OUT/confirm_3600s_seed1000"
"$RKNAS" bench proxies --table "$TABLE" --out "$OUT/proxies.json"
