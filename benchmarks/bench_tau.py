"""Does a benchmark table rank like the real budget? Kendall tau of its accuracy against long runs.

Picks ``--archs`` architectures of a table spread evenly over its range of trained accuracy
(sorted by the table's mean final test accuracy, every ``n/archs``-th one), trains each with the
table's own recipe on the whole training split of the table's data set (or ``--long-subset``
images of it) for ``--long-epochs`` epochs, scores it on the test split, and prints Kendall's
tau (and Spearman's rho) between the table's score and the long run's as JSON.

Each finished long run is appended to ``--results`` (JSONL) at once and a running one
checkpoints every epoch beside it, so the same command continues after an interruption.

Usage:
    python benchmarks/bench_tau.py --table benchmarks/tables/fashion_mnist_bench.db.gz --archs 10 \
        --long-epochs 10 --results benchmarks/bench_tau_fashion_mnist.jsonl
    (two cores: the same with ``--threads 1 --shard 0/2`` and ``--threads 1 --shard 1/2``, side by side)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_tau import append_result, read_results
from scipy.stats import kendalltau, spearmanr

from rknas.bench.replay import load_bench
from rknas.data.core import load_dataset
from rknas.data.download import ensure_dataset
from rknas.search.space import SearchSpace
from rknas.train import evaluate, fit


def pick(truth: np.ndarray, n: int) -> list[int]:
    """``n`` indices spread evenly over the sorted scores (lowest and highest included)."""
    order = np.argsort(truth)
    if n >= len(order):
        return [int(i) for i in order]
    return [int(order[round(j * (len(order) - 1) / (n - 1))]) for j in range(n)]


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, required=True)
    ap.add_argument("--archs", type=int, default=10)
    ap.add_argument("--long-epochs", type=int, default=10)
    ap.add_argument("--long-subset", type=int, default=None, help="train on this many images (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shard", default="0/1", help="I/N: train only every N-th chosen architecture from the I-th "
                    "(run N processes with one thread each to use N cores; they share --results)")
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        shard, shards = (int(v) for v in args.shard.split("/"))
        assert 0 <= shard < shards
    except (ValueError, AssertionError):
        ap.error(f"--shard must be I/N with 0 <= I < N, got {args.shard!r}")
    bench = load_bench(args.table)
    rated = [i for i in range(bench.size) if bench.curves[i]]
    chosen = [rated[j] for j in pick(bench.truth[rated], args.archs)]
    space = SearchSpace.model_validate(bench.space)
    ensure_dataset(space.data)
    full, test = load_dataset(space.data)
    if args.long_subset:
        g = torch.Generator().manual_seed(0)
        keep = torch.randperm(len(full.y), generator=g)[: args.long_subset]
        full = type(full)(full.x[keep], full.y[keep], full.classes)
    space.classes, space.in_channels, space.image_size = full.classes, full.in_channels, full.image_size
    done = read_results(args.results)
    for i in chosen[shard::shards]:
        key = f"{bench.sampled[i]}|{args.long_epochs}|{args.long_subset}"
        if key in done:
            continue
        network, training = space.configs(bench.sampled[i], seed=0, epochs=args.long_epochs)
        ckpt = args.results.with_suffix(".ckpt") / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        model, _, (mean, std) = fit(network, training, full, None, checkpoint=ckpt, resume=ckpt.exists())
        acc = evaluate(model, test, mean, std)["accuracy"]
        rec = {"key": key, "arch": bench.sampled[i], "params": int(bench.params[i]), "table": float(bench.truth[i]),
               "long": float(acc), "seconds": time.time() - t0}
        append_result(args.results, rec)
        ckpt.unlink(missing_ok=True)
        print(json.dumps(rec), flush=True)
        done[key] = rec
    done = read_results(args.results)  # other shards' runs too
    pairs = [done[k] for k in done if k.endswith(f"|{args.long_epochs}|{args.long_subset}")]
    a, b = [p["table"] for p in pairs], [p["long"] for p in pairs]
    out = {"n": len(pairs), "kendall_tau": float(kendalltau(a, b).statistic) if len(pairs) > 1 else None,
           "spearman": float(spearmanr(a, b).statistic) if len(pairs) > 2 else None,
           "long_epochs": args.long_epochs, "long_subset": args.long_subset}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
