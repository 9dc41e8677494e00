#!/usr/bin/env bash
# Transfer (issue 25 item 4): searches on the Fashion-MNIST table started from the digits table's best
# networks, against the paper's models (the space's start_from) and no warm start.
set -e
cd "$(dirname "$0")/.."
R=.venv/bin/rknas
T=benchmarks/tables/fashion_mnist_bench.db.gz
for budget in 900 3600; do
  $R bench replay --table $T --budget $budget --workers 2 --repeats 50 --jobs 1 --strategy tpe+asha,tpe+asha+warm \
    --out benchmarks/replay/transfer/paper_${budget}s
  $R bench replay --table $T --budget $budget --workers 2 --repeats 50 --jobs 1 --strategy tpe+asha+warm \
    --warm-from benchmarks/tables/digits_bench.db.gz --warm-top 6 --out benchmarks/replay/transfer/digits_${budget}s
  echo "$budget done $(date +%T)"
done
