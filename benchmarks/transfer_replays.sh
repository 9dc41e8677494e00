#!/usr/bin/env bash
# Transfer (issue 25 item 4): searches on the Fashion-MNIST table started from the digits table's best
# networks, against the paper's models (the space's start_from) and no warm start.
# Usage: benchmarks/transfer_replays.sh [RACE [TAG]]   (RACE, e.g. race2: every strategy races; outputs get the suffix _RACE, or TAG when given)
set -e
cd "$(dirname "$0")/.."
R=${RKNAS:-.venv/bin/rknas}
T=benchmarks/tables/fashion_mnist_bench.db.gz
S=${1:++$1}
O=${2-${1:+_$1}}
for budget in 900 3600; do
  $R bench replay --table $T --budget $budget --workers 2 --repeats 50 --jobs 1 --strategy "tpe+asha$S,tpe+asha+warm$S" \
    --out benchmarks/replay/transfer/paper_${budget}s$O
  $R bench replay --table $T --budget $budget --workers 2 --repeats 50 --jobs 1 --strategy "tpe+asha+warm$S" \
    --warm-from benchmarks/tables/digits_bench.db.gz --warm-top 6 --out benchmarks/replay/transfer/digits_${budget}s$O
  echo "$budget done $(date +%T)"
done
