#!/usr/bin/env bash
# Issue 25, once the Fashion-MNIST table has 4 seeds: the default, random search and racing, judged
# on unseen seeds and the old way, at 15 and 60 minutes; then which one-run score ranks best.
# Usage: benchmarks/judged_replays.sh [BUILD_DB]   (the build's .db; it is packed over the shipped table first)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${RKNAS:-.venv/bin/rknas}
DB=${1:-benchmarks/bench/fashion_mnist_bench.db}
T=benchmarks/tables/fashion_mnist_bench.db.gz
"$R" bench pack --table "$DB" --out "$T"
mkdir -p benchmarks/replay/judged
for budget in 900 3600; do
  for j in unseen all; do
    "$R" bench replay --table "$T" --budget $budget --workers 2 --repeats 50 --judge $j \
      --strategy random,random+race2,tpe+asha+warm,tpe+asha+warm+race2 --out benchmarks/replay/judged/race_${budget}s_$j
  done
done
.venv/bin/python benchmarks/score_agreement.py --table "$DB" --draws 200 --out benchmarks/score_agreement.json
