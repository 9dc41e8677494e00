#!/usr/bin/env bash
# Issue 17's speed goal: 50 replays of a 200-trial tpe+asha search on the shipped table, in
# under a minute, measured as a user runs it (CLI start, table load, replays, JSON and PNG).
# Appends one JSON line per run to benchmarks/replay_speed.jsonl (date, commit, machine).
#
# Usage: benchmarks/replay_speed.sh [RUNS] [STRATEGY]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
STRATEGY=${2:-tpe+asha}
RKNAS=${RKNAS:-.venv/bin/rknas}
TABLE=benchmarks/tables/fashion_mnist_bench.db.gz
LOG=benchmarks/replay_speed.jsonl
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "error: RUNS must be a whole number of at least 1, got '$RUNS'" >&2; exit 2; }
[[ -x "$RKNAS" ]] || { echo "error: no $RKNAS; run 'make venv' first (or set RKNAS)" >&2; exit 2; }
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- rknas || echo "+dirty")
machine="$(nproc) cores, $(python3 -c 'import platform; print(platform.processor() or platform.machine())')"
for i in $(seq "$RUNS"); do
  start=$(date +%s.%N)
  "$RKNAS" bench replay --table "$TABLE" --strategy "$STRATEGY" --trials 200 --budget 10000000 --repeats 50 \
    --out "$OUT/r$i" > /dev/null
  end=$(date +%s.%N)
  wall=$(python3 -c "print(round($end - $start, 1))")
  line="{\"date\": \"$(date -u +%FT%TZ)\", \"commit\": \"$commit\", \"machine\": \"$machine\", \"strategy\": \"$STRATEGY\", \"repeats\": 50, \"trials\": 200, \"wall_s\": $wall}"
  echo "$line" | tee -a "$LOG"
done
