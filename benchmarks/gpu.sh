#!/usr/bin/env bash
# The GPU checks in one prepared script for a lent GPU machine, at most 8 minutes on one GPU
# (run from the repository root):
#   bash benchmarks/gpu.sh [OUT_DIR]     -> JSON lines and tables on stdout and in OUT_DIR;
#                                           the figures go into benchmarks/RESULTS.md
# Section 1 (about 2 minutes): images/s and peak CUDA memory of RKCNN-I-5_5_5 k=80 and
#   RKCNN-I-2_2_2 k=32 on CIFAR-shaped synthetic batches: fp32 vs bf16 + channels-last,
#   plain vs memory-efficient units (benchmarks/gpu_bench.py; `--device cpu --quick` runs it anywhere).
# Section 2 (about 4.5 minutes): trials per hour with 1, 2 and 4 trials sharing the GPU
#   (--gpus-per-trial 1 / 0.5 / 0.25) on a small search over a CIFAR-shaped synthetic image folder.
#   It needs Ray, Optuna and SQLAlchemy; without them it is skipped, with a message.
# Nothing is installed or downloaded: rknas runs from this source tree (PYTHONPATH), so the machine
# needs torch and rknas's light dependencies (pydantic, pluggy, pyyaml, numpy); wheels placed in
# .whl/ (for a machine without network) are unpacked into /tmp/site first.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/rknas-gpu}}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0), 'torch', torch.__version__)" \
  || { echo "no usable CUDA device"; exit 2; }
"$PY" -c "import rknas.train" 2>"$OUT/import_error.txt" \
  || { echo "rknas does not import here:"; tail -1 "$OUT/import_error.txt"; exit 2; }

echo "== section 1: throughput and memory =="
timeout 150 "$PY" benchmarks/gpu_bench.py --device cuda --batch 64 --warmup 5 --steps 30 --out "$OUT/gpu_bench.jsonl" \
  | tee "$OUT/gpu_bench.txt" || echo "section 1 stopped early (status $?)"

echo "== section 2: trials per hour, 1 / 2 / 4 trials sharing the GPU =="
if ! "$PY" -c "import ray, optuna, sqlalchemy" 2>/dev/null; then
  echo "section 2 skipped: Ray, Optuna and SQLAlchemy are needed (pip install -e . on a machine with network)"
  exit 0
fi
DATA=/tmp/rknas-synth32
[ -d "$DATA/train" ] || "$PY" benchmarks/gpu_bench.py --make-image-folder "$DATA" --images 5000
cat > "$OUT/gpu_share.yaml" <<EOF
name: gpu_share
description: CIFAR-shaped synthetic images, small fixed-budget trials, to measure GPU sharing
data: {name: image_folder, root: $DATA, val_fraction: 0.2, options: {image_size: 32}}
framework: cifar
architecture:
  periods: 3
  strategy: [E, I, R]
  stages: {low: 2, high: 3}
  k: {low: 16, high: 48, step: 16}
  steps: 1
  attention: true
  multiscale: true
training:
  optimizer: sgd
  lr: {low: 0.05, high: 0.2, log: true}
  batch_size: 128
  schedule: cosine
fidelity: {epochs: 2, min_epochs: 1, reduction_factor: 2}
objectives:
  - {metric: val_accuracy, direction: maximize}
EOF
for G in 1 0.5 0.25; do
  DB="sqlite:///$OUT/gpu_share_$G.db"
  rm -f "$OUT/gpu_share_$G.db"
  # --timeout stops starting trials; the outer timeout is the hard cap of this run.
  timeout 90 "$PY" -m rknas.cli search --space "$OUT/gpu_share.yaml" --study "share_$G" --storage "$DB" --trials 200 \
    --gpus-per-trial "$G" --cpus-per-trial 2 --timeout 60 --no-early-stopping > "$OUT/search_$G.log" 2>&1 \
    || echo "search with --gpus-per-trial $G ended with status $? (see $OUT/search_$G.log)"
  { "$PY" benchmarks/gpu_bench.py --trials-per-hour "$DB" "share_$G" || echo '{"error": "no study"}'; } \
    | sed "s/^/gpus_per_trial=$G /" | tee -a "$OUT/share.txt"
done
