"""A driver's memory over one table-backed search: RSS every 200 ended trials (issue 24).

One ``run_search`` of TRIALS trials on a new SQLite study (the shipped table, 16 at a time,
no sampler window), the driver being this process. Set ``TUNE_*`` variables in the environment
to compare Tune's settings (each row records them); ROUND_TRIALS sets the runner's Tune rounds
(0: one round for the whole search).

Usage: python benchmarks/driver_memory.py LABEL TRIALS OUT.jsonl [ROUND_TRIALS]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

from rknas.search import runner
from rknas.search.runner import SearchOptions, run_search

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    label, trials, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    if len(sys.argv) > 4:
        runner.ROUND_TRIALS = int(sys.argv[4]) or None  # type: ignore[assignment]
    ended, t0, c0 = [0], time.time(), time.process_time()

    def on_event(kind: str, data: dict) -> None:
        if kind != "trial_end":
            return
        ended[0] += 1
        if ended[0] % 200 == 0:
            row = {"label": label, "ended": ended[0], "rss_mb": round(rss_mb(), 1),
                   "wall_s": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                   "round": getattr(runner, "ROUND_TRIALS", "n/a"),
                   "env": {k: v for k, v in os.environ.items() if k.startswith(("TUNE_", "RKNAS_"))}}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")

    url = f"sqlite:///{tempfile.mkdtemp(prefix='rknas-memory-')}/m.db"
    run_search(SearchOptions(space="fashion_mnist_bench", table=str(REPO / "benchmarks/tables/fashion_mnist_bench.db.gz"),
                             trials=trials, storage=url, study="m", concurrency=16, cpus_per_trial=0.125,
                             heartbeat_interval=10, stale_after=120, on_event=on_event, time_scale=0.002))


if __name__ == "__main__":
    main()
