"""Does the simulator agree with the system it simulates? Real table-backed searches against replays.

Runs ``--searches`` real searches (``rknas search --table``: Ray Tune, ASHA, the Optuna
searcher, SQLite, heartbeats; only the training is looked up) of the default strategy on the
shipped table, each with its own seed, for ``--budget`` simulated seconds at ``--scale``. For
each it takes what ``rknas best`` would return after every completed trial, and the time in
simulated seconds (from the first trial's start, as a replay's clock starts with its workers
ready) at which that network came within the target of the table's best mean test accuracy.
Then ``rknas bench replay`` of the same strategy and workers, ``--repeats`` times, and a
two-sample Mann-Whitney U test of the two time-to-target distributions (a search that never
got there counts as slower than any that did).

Each search's figures are appended to ``--out`` as it ends (a JSON line), then one summary line.

    python benchmarks/table_search_vs_replay.py --searches 20 --scale 0.1 --budget 900
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TABLE = HERE / "tables" / "fashion_mnist_bench.db.gz"
TARGET = 0.003


def search_once(seed: int, budget: float, scale: float, workers: int, bench, tmp: Path) -> dict:
    import optuna
    from optuna.trial import TrialState

    from rknas.search.runner import SearchOptions, run_search
    from rknas.storage import TrialRecord

    url = f"sqlite:///{tmp}/s{seed}.db"
    t0 = time.time()
    run_search(SearchOptions(space="fashion_mnist_bench", table=TABLE, time_scale=scale, trials=10_000, storage=url,
                             seed=seed, concurrency=workers, timeout=budget * scale))
    wall = time.time() - t0
    trials = optuna.load_study(study_name="fashion_mnist_bench", storage=url).trials
    start = min(t.datetime_start for t in trials if t.datetime_start is not None)
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.datetime_complete)
    best_val, events = -math.inf, []
    for t in done:
        at = (t.datetime_complete - start).total_seconds() / scale
        if at > budget:
            break
        if t.value > best_val:
            best_val = t.value
            arch = int(TrialRecord.of(t).table_run.split(" arch ")[1].split()[0])
            events.append((at, bench.best - float(bench.truth[arch])))
    reached = next((at for at, regret in events if regret <= TARGET), None)
    return {"seed": seed, "time_to_target": reached, "final_regret": events[-1][1] if events else None,
            "trials": len(trials), "completed": len(done), "wall_s": round(wall, 1)}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--searches", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--budget", type=float, default=900.0, help="simulated seconds per search")
    ap.add_argument("--scale", type=float, default=0.1, help="real seconds per recorded second")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "table_search_vs_replay.jsonl")
    args = ap.parse_args()

    from scipy.stats import mannwhitneyu

    from rknas.bench.replay import replay
    from rknas.bench.simulator import Strategy
    from rknas.bench.tableview import load_bench

    bench = load_bench(TABLE)
    real = []
    with tempfile.TemporaryDirectory(prefix="rknas-tsvr-") as tmp:
        for seed in range(args.searches):
            row = search_once(seed, args.budget, args.scale, args.workers, bench, Path(tmp))
            real.append(row)
            with args.out.open("a") as f:
                f.write(json.dumps({"kind": "search", "scale": args.scale, "budget": args.budget, **row}) + "\n")
            print(row, flush=True)
    [summary] = replay(bench, [Strategy("tpe", asha=True, warm=True)], args.budget, args.workers, args.repeats, seed=0)
    sim = [math.inf if t is None else t for t in summary.time_to_target]
    got = [math.inf if r["time_to_target"] is None else r["time_to_target"] for r in real]
    never = 10 * args.budget  # ranks after every search that got there

    test = mannwhitneyu([min(x, never) for x in got], [min(x, never) for x in sim], alternative="two-sided")
    line = {
        "kind": "summary", "date": time.strftime("%Y-%m-%d"), "strategy": "tpe+asha+warm", "workers": args.workers,
        "budget_s": args.budget, "scale": args.scale, "searches": len(real), "replays": args.repeats,
        # null: the median search did not get there within the budget
        "real_median_s": _finite(float(np.median(got))), "replay_median_s": _finite(float(np.median(sim))),
        "real_reached": sum(math.isfinite(x) for x in got), "replay_reached": sum(math.isfinite(x) for x in sim),
        "real_trials_median": statistics.median(r["trials"] for r in real),
        "replay_trials_median": statistics.median(summary.trials),
        "mann_whitney_u": float(test.statistic), "p_value": float(test.pvalue),
    }
    with args.out.open("a") as f:
        f.write(json.dumps(line) + "\n")
    print(line)


if __name__ == "__main__":
    main()
