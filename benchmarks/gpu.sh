#!/usr/bin/env bash
# The GPU checks in one short script for a lent GPU machine (run from the repository root):
#   bash benchmarks/gpu.sh        -> prints JSON lines; figures go into benchmarks/RESULTS.md
set -euo pipefail
python3 -m pip install -q -e . >/dev/null
python3 -c "import torch; print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
python3 benchmarks/train_speed.py --device cuda --batch 64 --steps 20
python3 benchmarks/train_speed.py --device cuda --batch 64 --steps 20 --channels-last
# Two half-GPU trials share the card (fractional GPUs through Ray).
rm -f /tmp/gpu.db
timeout 300 rknas search --space digits_quick --trials 6 --gpus-per-trial 0.5 --storage sqlite:////tmp/gpu.db
