"""Does a benchmark table rank like the real budget? Kendall tau of its accuracy against long runs.

Picks ``--archs`` architectures of a table spread evenly over its range of trained accuracy
(sorted by the table's mean final test accuracy, every ``n/archs``-th one), trains each with the
table's own recipe on the whole training split of the table's data set (or ``--long-subset``
images of it) for ``--long-epochs`` epochs, scores it on the test split, and prints Kendall's
tau (and Spearman's rho) between the table's score and the long run's as JSON.

Each finished long run is appended to ``--results`` (JSONL) at once and a running one
checkpoints every epoch beside it, so the same command continues after an interruption.
Several copies of the command share the work: each claims the next architecture (the longest
recorded runs first) with a claim file holding its process id, and takes over the claim of a
process that is no longer alive.

Usage:
    python benchmarks/bench_tau.py --table benchmarks/tables/fashion_mnist_bench.db.gz --archs 10 \
        --long-epochs 10 --results benchmarks/bench_tau_fashion_mnist.jsonl
    (two cores: start the same command twice with ``--threads 1``)
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_tau import append_result, read_results
from scipy.stats import kendalltau, spearmanr

from rknas.bench.tableview import load_bench
from rknas.data.core import load_dataset
from rknas.data.download import ensure_dataset
from rknas.errors import ConfigError
from rknas.search.space import SearchSpace
from rknas.train import evaluate, fit


def pick(truth: np.ndarray, n: int) -> list[int]:
    """``n`` indices spread evenly over the sorted scores (lowest and highest included)."""
    order = np.argsort(truth)
    if n >= len(order):
        return [int(i) for i in order]
    return [int(order[round(j * (len(order) - 1) / (n - 1))]) for j in range(n)]


def work_order(bench: Any, chosen: list[int]) -> list[int]:
    """The chosen architectures, longest recorded run first, so that copies end their shares together."""
    return sorted(chosen, key=lambda i: -max(float(w[-1]) for _, w in bench.curves[i]))


def run_key(sampled: dict[str, Any], epochs: int, subset: Optional[int]) -> str:
    """A long run's key in the results file; its checkpoint and claim are named by this key's hash."""
    return f"{sampled}|{epochs}|{subset}"


def alive(pid: int) -> bool:
    """Whether a process of this machine is running (a zombie or a recycled id counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(path: Path) -> bool:
    """Claim a piece of work for this process: True when it is ours (new, ours already, or its claimant died)."""
    with open(path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # claims are checked and written one process at a time
        try:
            owner = int(path.read_text() or 0)
        except (OSError, ValueError):
            owner = 0
        if owner and owner != os.getpid() and alive(owner):
            return False
        path.write_text(str(os.getpid()))
        return True


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, required=True)
    ap.add_argument("--archs", type=int, default=10)
    ap.add_argument("--long-epochs", type=int, default=10)
    ap.add_argument("--long-subset", type=int, default=None, help="train on this many images (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
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
    for i in work_order(bench, chosen):
        key = run_key(bench.sampled[i], args.long_epochs, args.long_subset)
        ckpt = args.results.with_suffix(".ckpt") / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        if not claim(ckpt.with_suffix(".claim")):
            continue
        if key in read_results(args.results):  # read after claiming: a copy finishing it now has written it
            ckpt.with_suffix(".claim").unlink(missing_ok=True)
            continue
        network, training = space.configs(bench.sampled[i], seed=0, epochs=args.long_epochs)
        t0 = time.time()
        model, _, (mean, std) = fit(network, training, full, None, checkpoint=ckpt, resume=ckpt.exists())
        acc = evaluate(model, test, mean, std)["accuracy"]
        rec = {"key": key, "arch": bench.sampled[i], "params": int(bench.params[i]), "table": float(bench.truth[i]),
               "long": float(acc), "seconds": time.time() - t0}
        append_result(args.results, rec)
        ckpt.unlink(missing_ok=True)
        ckpt.with_suffix(".claim").unlink(missing_ok=True)
        print(json.dumps(rec), flush=True)
    done = read_results(args.results)
    pairs = [done[k] for k in done if k.endswith(f"|{args.long_epochs}|{args.long_subset}")]
    a, b = [p["table"] for p in pairs], [p["long"] for p in pairs]
    out = {"n": len(pairs), "kendall_tau": float(kendalltau(a, b).statistic) if len(pairs) > 1 else None,
           "spearman": float(spearmanr(a, b).statistic) if len(pairs) > 2 else None,
           "long_epochs": args.long_epochs, "long_subset": args.long_subset}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    try:
        main()
    except ConfigError as exc:  # a missing or broken table, an unusable data set: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
