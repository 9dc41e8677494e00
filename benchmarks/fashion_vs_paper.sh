#!/usr/bin/env bash
# The search-quality benchmark (issue 7): does a search on Fashion-MNIST find an architecture
# that beats the paper's RKCNN-E/I/R-2 (k=32) at equal size and equal training budget?
#
#   1. a search of at most 60 minutes (TIMEOUT, default 30) on benchmarks/fashion_bench_78k.yaml:
#      fashion_mnist_default (its short fidelity, the paper's models enqueued first) with a size
#      limit of 78,410 params,
#   2. `rknas evaluate` of its best finalists with at most 78,410 params (the size of
#      RKCNN-I-2/R-2 k=32) and of the three paper models: full 60,000-image training split,
#      the same recipe (the study's best trial's settings), seeds and epochs for every model,
#      scored on the 10,000 test images.
#
# Needs Debian's dataset-fashion-mnist (found automatically) or --data-root. Both steps can be
# interrupted and continue when run again (the study and the finished runs are kept).
# Time on a 2-core CPU: the search is capped at TIMEOUT; evaluation about 5-6 min per run of a
# 78k-param model (2,066 images/s at batch 128 with 2 threads, benchmarks/train_speed.py,
# measured 2026-11-29), so 5 models x 2 seeds is about an hour.
set -euo pipefail
cd "$(dirname "$0")/.."
STORAGE=${STORAGE:-sqlite:///studies/benchmark.db}
STUDY=${STUDY:-fashion_bench}
SEEDS=${SEEDS:-2}
EPOCHS=${EPOCHS:-10}
OUT=${OUT:-studies/fashion_bench_eval}
TIMEOUT=${TIMEOUT:-1800}
RKNAS=${RKNAS:-.venv/bin/rknas}

$RKNAS search --space benchmarks/fashion_bench_78k.yaml --study "$STUDY" --storage "$STORAGE" --trials 1000 --timeout "$TIMEOUT"
$RKNAS evaluate --study "$STUDY" --storage "$STORAGE" --top 2 --max-params 78410 \
  --include rkcnn_e_2_mnist_k32,rkcnn_i_2_mnist_k32,rkcnn_r_2_mnist_k32 \
  --seeds "$SEEDS" --epochs "$EPOCHS" --out "$OUT"
echo "table: $OUT/evaluation.json, plot: $OUT/evaluation.png"
