"""Does the search's short budget rank architectures the way the evaluation budget does?

Samples ``--archs`` configurations of a space (architecture and training settings, Optuna's
RandomSampler with ``--seed``), and trains each twice from scratch with the seed a trial would
get (``seed + i``):

* short: what a search trial does (without ASHA): the space's data split (for
  fashion_mnist_default 6,000 training images, 3,000 validation images) for ``--short-epochs``
  (default: the space's fidelity), scored by validation accuracy;
* long: the evaluation budget: the data set's whole training split (or ``--long-subset`` images
  of it, a fixed random subset) for ``--long-epochs``, scored by test accuracy. Each keeps its
  own sampled training settings (schedule scaled to the epochs) unless ``--long-lr`` /
  ``--long-weight-decay`` give every long run the same ones.

It then prints Kendall's tau (``scipy.stats.kendalltau``) between the two scores, with
Spearman's rho for reference. Every finished run is appended to a JSONL file at once, and a
long run checkpoints every epoch, so the script can be stopped at any time and run again (the
same command, or with more ``--archs``) to continue: finished runs are skipped.

    python benchmarks/fidelity_tau.py --archs 3 --long-epochs 1 --long-subset 2000   # a tiny check
    python benchmarks/fidelity_tau.py --archs 10 --long-epochs 10                    # the full run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import optuna
import torch
from scipy.stats import kendalltau, spearmanr

from rknas.data.core import load_dataset
from rknas.models.counting import count_flops, count_params
from rknas.models.network import build_network
from rknas.search.runner import load_data
from rknas.search.space import load_space
from rknas.train import evaluate, fit


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring).

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The parsed options.
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="fashion_mnist_default")
    ap.add_argument("--archs", type=int, default=10, help="configurations to sample (the first N of the seeded sequence)")
    ap.add_argument("--short-epochs", type=int, default=None, help="default: the space's fidelity epochs")
    ap.add_argument("--short-subset", type=int, default=None,
                    help="short runs train on this many images (default: the space's train_subset); for comparing fidelities")
    ap.add_argument("--long-epochs", type=int, default=10)
    ap.add_argument("--long-subset", type=int, default=None, help="train long runs on this many images (default: all)")
    ap.add_argument("--long-lr", type=float, default=None, help="one learning rate for every long run (default: each its own)")
    ap.add_argument("--long-weight-decay", type=float, default=None, help="one weight decay for every long run")
    ap.add_argument("--phase", choices=("both", "short", "long"), default="both", help="run only one kind of run")
    ap.add_argument("--seed", type=int, default=0, help="sampler seed; configuration i trains with seed + i")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--data-root", default=None, help="where the data set's files are (overrides the space)")
    ap.add_argument("--results", type=Path, default=None, help="JSONL file (default runs/fidelity_tau/<space>.jsonl)")
    args = ap.parse_args(argv)
    for name in ("archs", "long_epochs", "short_epochs", "long_subset"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def sample_configs(space: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` configurations of the seeded random sequence (the same for any larger ``n``).

    Args:
        space: The loaded search space.
        n: How many.
        seed: The sampler's seed.

    Returns:
        One dict of trial parameters (and constants) per configuration.
    """
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append({**space.sample(trial), **trial.params})
    return out


def read_results(path: Path) -> dict[str, dict]:
    """Finished runs in a JSONL results file, by key (a torn last line is ignored).

    Args:
        path: The file; missing means no runs.

    Returns:
        key -> record.
    """
    done: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "key" in rec:
                done[rec["key"]] = rec
    return done


def append_result(path: Path, record: dict) -> None:
    """Append one record as a line and flush it to disk.

    Args:
        path: The JSONL file.
        record: The run's record.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def summarize(pairs: list[tuple[int, dict, dict]]) -> dict[str, Any]:
    """Kendall's tau and Spearman's rho between short and long scores.

    Args:
        pairs: ``(arch, short record, long record)`` for every configuration with both runs.

    Returns:
        ``n``, ``kendall_tau``, ``kendall_p``, ``spearman`` (None with fewer than 2 pairs).
    """
    short = [s["score"] for _, s, _ in pairs]
    long = [lg["score"] for _, _, lg in pairs]
    if len(pairs) < 2:
        return {"n": len(pairs), "kendall_tau": None, "kendall_p": None, "spearman": None}
    tau = kendalltau(short, long)
    return {"n": len(pairs), "kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "spearman": float(spearmanr(short, long).statistic)}


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Run what is missing, then print the per-configuration scores and the rank correlation.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The summary printed last (also the runs it trained, as ``trained``).
    """
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    if args.data_root:
        space.data.root = args.data_root
    if args.short_subset is not None:
        space.data.train_subset = args.short_subset
    short_epochs = args.short_epochs or space.fidelity.epochs
    results = args.results or Path("runs") / "fidelity_tau" / f"{space.name}.jsonl"
    ckpt_dir = results.with_name(results.name + ".ckpt")
    train, val = load_data(space)  # the search's split; fills classes, channels, image size
    full, test = load_dataset(space.data)
    if args.long_subset is not None and args.long_subset < len(full):
        idx = torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed))[: args.long_subset]
        long_train = full.subset(idx)
    else:
        long_train = full
    configs = sample_configs(space, args.archs, args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    test_d = test.to(device)
    done = read_results(results)
    override = {k: v for k, v in (("lr", args.long_lr), ("weight_decay", args.long_weight_decay)) if v is not None}
    phases = {"both": ("short", "long"), "short": ("short",), "long": ("long",)}[args.phase]

    def key(phase: str, i: int) -> str:
        k: dict[str, Any] = {"space": space.name, "sampler_seed": args.seed, "arch": i, "phase": phase}
        if phase == "short":
            k.update(epochs=short_epochs, train_images=len(train))
        else:
            k.update(epochs=args.long_epochs, train_images=len(long_train), training_override=override)
        return json.dumps(k, sort_keys=True)

    print(f"{space.name}: {args.archs} configurations; short: {short_epochs} epochs on {len(train):,} images, "
          f"val {len(val):,}; long: {args.long_epochs} epochs on {len(long_train):,} images, test {len(test):,}; "
          f"on {device}; results in {results}", file=sys.stderr, flush=True)
    t_start, trained = time.time(), 0
    for phase in phases:
        for i, params in enumerate(configs):
            k = key(phase, i)
            if k in done:
                if done[k]["params"] != params:
                    raise SystemExit(f"{results}: configuration {i} differs from the one sampled now "
                                     "(another space or rknas version); pass another --results")
                continue
            seed = args.seed + i
            epochs = short_epochs if phase == "short" else args.long_epochs
            net, tr = space.configs(params, seed=seed, epochs=epochs)
            t0 = time.time()
            if phase == "short":
                _, hist, _ = fit(net, tr, train, val, device=device)
                score, images, scored_on = hist[-1]["val_accuracy"], len(train), len(val)
            else:
                tr = tr.model_copy(update=override)
                ckpt_dir.mkdir(parents=True, exist_ok=True)
                ckpt = ckpt_dir / f"arch{i}_{hashlib.sha1(k.encode()).hexdigest()[:12]}.pt"  # one per key
                model, _, (mean, std) = fit(net, tr, long_train, None, device=device, checkpoint=ckpt, resume=True)
                score = evaluate(model, test_d, mean, std, precision=tr.precision)["accuracy"]
                images, scored_on = len(long_train), len(test)
                ckpt.unlink(missing_ok=True)
            model_cpu = build_network(net)
            record = {"key": k, "arch": i, "phase": phase, "params": params, "name": net.name, "k": net.k,
                      "n_params": count_params(model_cpu), "flops": count_flops(model_cpu, net), "seed": seed,
                      "epochs": epochs, "train_images": images, "scored_on": scored_on,
                      "metric": "val_accuracy" if phase == "short" else "test_accuracy", "score": score,
                      "lr": tr.lr, "weight_decay": tr.weight_decay, "wall_s": round(time.time() - t0, 1)}
            append_result(results, record)
            done[k] = record
            trained += 1
            print(json.dumps({x: record[x] for x in ("arch", "phase", "name", "k", "n_params", "score", "wall_s")}), flush=True)

    pairs = [(i, done[key("short", i)], done[key("long", i)]) for i in range(args.archs)
             if key("short", i) in done and key("long", i) in done]
    for i, s, lg in sorted(pairs, key=lambda p: -p[2]["score"]):
        print(f"  arch {i:>2}  {s['name']:<12} k={s['k']}  {s['n_params']:>8,} params  lr {s['lr']:.3f}  "
              f"short val {s['score']:.4f}  long test {lg['score']:.4f}", file=sys.stderr)
    summary = {"space": space.name, "archs": args.archs, "short_epochs": short_epochs, "short_train_images": len(train),
               "short_val_images": len(val),
               "long_epochs": args.long_epochs, "long_train_images": len(long_train), "long_training_override": override,
               **summarize(pairs), "trained": trained, "wall_s": round(time.time() - t_start, 1), "results": str(results)}
    if len(pairs) < args.archs:
        summary["missing"] = args.archs - len(pairs)
    print(json.dumps(summary, indent=2), flush=True)
    return summary


if __name__ == "__main__":
    main()
