"""Which score of one training run best predicts a network's mean on seeds it never saw? (issue 25)

A search ranks trials by one run's score. The candidates, each computed from one seed's curve:
- ``last``: the last epoch's validation accuracy (what a search uses today);
- ``mean_last2``: the mean validation accuracy of the last two epochs;
- ``val_loss``: the last epoch's validation loss (lower is better);
- ``acc_then_loss``: the last validation accuracy, ties broken by the lower validation loss.

Each is judged against the truth of the same architecture on its *other* seeds (mean final test
accuracy), by Kendall's tau-b over the table's architectures and by the regret of the single
architecture each score ranks first. One seed per architecture is drawn as the seen one, many
times over; only runs that recorded validation loss can be seen (tables built before 2026-12-05
did not record it), and the truth uses every other complete seed.

Usage: python benchmarks/score_agreement.py [--table T] [--draws 200] [--out benchmarks/score_agreement.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rknas.bench.table import BenchTable  # noqa: E402

TABLE = REPO / "benchmarks" / "bench" / "fashion_mnist_bench.db"


def candidates(rows: list) -> dict[str, tuple]:
    """Each candidate score of one run (larger is better), as a tuple so that ties break in order."""
    acc = [r.val_accuracy for r in rows]
    loss = rows[-1].val_loss
    return {
        "last": (acc[-1],),
        "mean_last2": (float(np.mean(acc[-2:])),),
        "val_loss": (-loss,),
        "acc_then_loss": (acc[-1], -loss),
    }


def ranks(values: list[tuple]) -> np.ndarray:
    """Dense ranks of tuples (equal tuples share a rank), for Kendall's tau-b."""
    order = sorted(set(values))
    index = {v: i for i, v in enumerate(order)}
    return np.array([index[v] for v in values], dtype=float)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", type=Path, default=TABLE)
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    with BenchTable.open(args.table) as t:
        curves = t.curves()
        runs = t.runs()
    ok = {(a, s) for a, s, status, _ in runs if status == "ok"}
    by_arch: dict[int, dict[int, list]] = {}
    for (a, s), rows in curves.items():
        if (a, s) in ok:
            by_arch.setdefault(a, {})[s] = rows
    # an architecture takes part when one of its runs recorded val_loss and it has another complete seed
    usable = {a: seeds for a, seeds in by_arch.items()
              if len(seeds) >= 2 and any(rows[-1].val_loss is not None for rows in seeds.values())}
    vals = sorted({r.val_accuracy for seeds in by_arch.values() for rows in seeds.values() for r in rows})
    step = min(b - a for a, b in zip(vals, vals[1:]) if b - a > 1e-9)
    rng = random.Random(args.seed)
    names = ["last", "mean_last2", "val_loss", "acc_then_loss"]
    taus: dict[str, list[float]] = {n: [] for n in names}
    regrets: dict[str, list[float]] = {n: [] for n in names}
    tops_tied: list[int] = []
    archs = sorted(usable)
    for _ in range(args.draws):
        scores: dict[str, list[tuple]] = {n: [] for n in names}
        truth = []
        for a in archs:
            seeds = usable[a]
            seen = rng.choice([s for s, rows in seeds.items() if rows[-1].val_loss is not None])
            c = candidates(seeds[seen])
            for n in names:
                scores[n].append(c[n])
            truth.append(statistics.mean(rows[-1].test_accuracy for s, rows in seeds.items() if s != seen))
        truth_a = np.array(truth)
        best = truth_a.max()
        for n in names:
            tau = kendalltau(ranks(scores[n]), truth_a).statistic
            taus[n].append(float(tau))
            top = max(range(len(archs)), key=lambda i: (scores[n][i], -i))  # the first of equal scores
            regrets[n].append(float(best - truth_a[top]))
        top_last = max(scores["last"])
        tops_tied.append(sum(1 for v in scores["last"] if v == top_last))
    out = {
        "table": str(args.table), "archs": len(archs), "draws": args.draws, "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "val_step": step, "val_images": round(1 / step),
        "median_tied_at_top_last": statistics.median(tops_tied),
        "candidates": {n: {"tau_mean": statistics.mean(taus[n]), "tau_sd": statistics.pstdev(taus[n]),
                           "top_regret_median": statistics.median(regrets[n]),
                           "top_within_0.3": sum(r <= 0.003 for r in regrets[n]) / len(regrets[n])} for n in names},
    }
    print(f"{args.table}: {len(archs)} architectures with a validation loss and another seed; validation steps of "
          f"{step * 100:.3g} points ({out['val_images']} images); {args.draws} draws of the seen seed")
    print(f"at the top of 'last', a median of {out['median_tied_at_top_last']} architectures tie")
    for n in names:
        c = out["candidates"][n]
        print(f"  {n:14s} tau {c['tau_mean']:.3f} +- {c['tau_sd']:.3f}   top pick: median regret "
              f"{c['top_regret_median'] * 100:.2f} points, within 0.3 points in {c['top_within_0.3'] * 100:.0f}% of draws")
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
