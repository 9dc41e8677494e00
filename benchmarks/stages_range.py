"""Would one fixed range for the stage count make TPE cheaper, or better? A replay experiment.

Today a period's ``stages`` range depends on its strategy (RKCNN-E allows 1 stage, I and R
need 2), so Optuna's multivariate TPE leaves it out of its joint model and samples it on its own
in nearly every trial. The variant here samples it from the space's whole range for every
strategy and clamps it to the strategy's minimum when the architecture is looked up, which is
what a space built that way would train. Both are replayed on the shipped table with the same
seeds:

- quality: ``tpe+asha+warm`` and ``tpe+asha`` at 15 simulated minutes on 2 workers (the setting
  of RESULTS.md's strategy table), median time to within 0.3 points and repeats that got there;
- speed: 50 replays of a 200-trial ``tpe+asha`` search (issue 17's goal), replay time only.

The variant is made by patching, in this process only, what ``SearchSpace.sample`` and the
snapper see; forked replay workers inherit the patch. Nothing in rknas changes.

Usage: python benchmarks/stages_range.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

TABLE = Path(__file__).parent / "tables" / "fashion_mnist_bench.db.gz"


def use_fixed_range() -> None:
    """Sample stages from the whole range for every strategy; clamp at lookup."""
    import rknas.search.space as sp
    from rknas.bench import tableview as tv
    from rknas.strategies.lookup import strategies

    real = strategies()
    minimum = {n: s.min_stages for n, s in real.items()}
    relaxed = {n: dataclasses.replace(s, min_stages=1) for n, s in real.items()}
    sp.strategies = lambda: relaxed  # type: ignore[assignment]
    find = tv.Snapper.find

    def clamped(self: tv.Snapper, proposal: dict) -> int:
        p = dict(proposal)
        for key in [k for k in p if k.endswith("_stages")]:
            p[key] = max(int(p[key]), minimum[p[key[: -len("stages")] + "strategy"]])
        return find(self, p)

    tv.Snapper.find = clamped  # type: ignore[method-assign]


def measure(variant: str, repeats: int) -> list[dict]:
    from rknas.bench import replay as rp
    from rknas.bench import simulator as sim
    from rknas.bench import tableview as tv

    bench = tv.load_bench(TABLE)
    rows = []
    quality = [sim.Strategy("tpe", asha=True, warm=True), sim.Strategy("tpe", asha=True)]
    for s in rp.replay(bench, quality, 900, 2, repeats, seed=0):
        t = s.median_time_to_target()
        rows.append({"variant": variant, "strategy": s.strategy, "budget_s": 900,
                     "median_min_to_0.3pt": None if t is None else round(t / 60, 1),
                     "reached": sum(x is not None for x in s.time_to_target), "repeats": repeats})
    start = time.time()
    rp.replay(bench, [sim.Strategy("tpe", asha=True)], 1e7, 4, repeats, seed=0, max_trials=200)
    rows.append({"variant": variant, "strategy": "tpe+asha", "trials": 200, "repeats": repeats,
                 "replay_wall_s": round(time.time() - start, 1)})
    return rows


def main() -> None:
    import subprocess
    import sys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--variant", choices=["today", "fixed"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeats < 1:
        print(f"error: --repeats must be at least 1, got {args.repeats}", file=sys.stderr)
        sys.exit(2)
    if args.variant is None:  # each variant in a fresh process, so the patch cannot leak
        for v in ("today", "fixed"):
            subprocess.run([sys.executable, __file__, "--variant", v, "--repeats", str(args.repeats)], check=True)
        return
    if args.variant == "fixed":
        use_fixed_range()
    for row in measure(args.variant, args.repeats):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
