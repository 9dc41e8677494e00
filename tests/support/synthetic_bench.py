"""A benchmark table with made-up curves (no training), for replay tests.

Each architecture's true accuracy is a smooth function of its knobs plus a fixed offset per
architecture, so a sampler that models the space finds the best faster than random search;
seeds add noise of ``noise``; epoch e's accuracy climbs towards the final one; an epoch lasts
a time that grows with the parameter count.
"""

from __future__ import annotations

import json
import random

from rknas.bench.build import arch_rows, draw_architectures, table_settings
from rknas.bench.table import BenchTable, EpochRow
from rknas.options import BenchBuildOptions

# A tiny real bench space (digits, two knobs, two epochs) for tests that train.
TINY_SPACE = {
    "name": "tiny_bench", "data": {"name": "digits", "val_fraction": 0.2, "train_subset": 300},
    "framework": "cifar",
    "architecture": {"periods": 1, "strategy": ["E", "I"], "stages": {"low": 1, "high": 2}, "k": [4, 8], "steps": 1,
                     "attention": False, "multiscale": False},
    "training": {"lr": 0.1, "batch_size": 50, "warmup_epochs": 0},
    "fidelity": {"epochs": 2, "min_epochs": 1, "reduction_factor": 2},
}


_COUNTS: dict[str, tuple[int, int]] = {}  # network config -> (params, FLOPs): counting builds the network


def _rows(space, drawn):
    """``arch_rows``, each network counted once per test session (tables share their first draws)."""
    rows = []
    for source, params in drawn:
        key = space.configs(params)[0].model_dump_json()
        if key not in _COUNTS:
            row = arch_rows(space, [(source, params)])[0]
            _COUNTS[key] = row[3], row[4]
        rows.append((source, params, json.loads(key), *_COUNTS[key]))
    return rows


def make_table(path, space, archs=60, seeds=2, epochs=4, noise=0.002, seed=0, fail=()):
    """Write a table for ``space`` (classes, channels, image size set) and return {arch: true mean test}."""
    rng = random.Random(seed)
    drawn = draw_architectures(space, archs, seed)
    opts = BenchBuildOptions(space=str(space.name), archs=archs, seeds=seeds, out=path)
    truth = {}
    with BenchTable.create(path, table_settings(space, opts, epochs)) as table:
        table.add_archs(_rows(space, drawn))
        for i, a in enumerate(table.archs()):
            k = a.sampled.get("p1_k", 16)
            final = 0.80 + 0.1 * min(k, 32) / 32 - 0.002 * abs(k - 32) / 4 + 0.01 * rng.random()
            per_epoch_s = 1.0 + a.params / 20000
            if i in fail:
                table.add_run(a.arch, 0, [EpochRow(1, 0.1, 0.1, None, per_epoch_s)], "diverged", "nan")
                continue
            tests = []
            for s in range(seeds):
                f = final + rng.gauss(0, noise)
                curve = [EpochRow(e, f - 0.2 / e + 0.2 / epochs, f - 0.2 / e + 0.2 / epochs - 0.001, 1.0 / e,
                                  per_epoch_s * e) for e in range(1, epochs + 1)]
                table.add_run(a.arch, s, curve)
                tests.append(curve[-1].test_accuracy)
            truth[a.arch] = sum(tests) / len(tests)
    return truth
