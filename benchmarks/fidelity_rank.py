"""Do short trials rank architectures the way longer training does?

Samples architectures from a space, trains each with a short and a long budget (each with its
own schedule scaled to its epochs), and prints the Spearman rank correlation of validation
accuracy, with and without BatchNorm recalibration before evaluation.

    python benchmarks/fidelity_rank.py --space digits_quick --n 12 --short 2 --long 8
"""

from __future__ import annotations

import argparse
import json
import time

import optuna
import torch
from scipy.stats import spearmanr

from rknas.search.runner import load_data
from rknas.search.space import load_space
from rknas.train import fit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="digits_quick")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--short", type=int, default=2)
    ap.add_argument("--long", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    train, val = load_data(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    rows = []
    t0 = time.time()
    for i in range(args.n):
        trial = study.ask()
        params = {**space.sample(trial), **trial.params, "seed": args.seed + i}
        row = {"params": {k: v for k, v in params.items()}}
        for label, epochs, recal in (
            ("short", args.short, True),
            ("short_no_recal", args.short, False),
            ("long", args.long, True),
        ):
            net, tr = space.configs(params, seed=params["seed"], epochs=epochs)
            tr.bn_recalibrate = recal
            _, hist, _ = fit(net, tr, train, val)
            row[label] = hist[-1]["val_accuracy"]
        rows.append(row)
        study.tell(trial, row["long"])
        print(json.dumps({k: row[k] for k in ("short", "short_no_recal", "long")}), flush=True)
    out = {
        "space": args.space,
        "n": args.n,
        "short_epochs": args.short,
        "long_epochs": args.long,
        "spearman_short_vs_long": spearmanr([r["short"] for r in rows], [r["long"] for r in rows]).statistic,
        "spearman_short_no_recal_vs_long": spearmanr([r["short_no_recal"] for r in rows], [r["long"] for r in rows]).statistic,
        "wall_s": round(time.time() - t0, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
