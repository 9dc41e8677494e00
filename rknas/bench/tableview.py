"""A benchmark table held in memory for replay, and the lookup of a proposal in it.

``load_bench`` reads a table (``rknas.bench.table``) once into arrays: each architecture's
curves per seed, its failed runs, and its truth (the mean final test accuracy over its seeds).
``Bench.judged_on_unseen`` splits each architecture's seeds into the ones a replayed search may
observe and the ones that judge it. ``Snapper`` finds a sampler's proposal in the table, or the
nearest architecture the table has.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rknas.bench.table import BenchTable, arch_key
from rknas.errors import ConfigError


@dataclass
class Bench:
    """A table held in memory for replay: curves by architecture, the truth per architecture."""

    space: dict[str, Any]  # the table's space (settings["space"])
    epochs: int
    keys: dict[str, int]  # arch_key(sampled) -> index
    sampled: list[dict[str, Any]]
    params: np.ndarray  # parameter counts
    truth: np.ndarray  # mean final test accuracy over the architecture's ok seeds
    curves: list[list[tuple[np.ndarray, np.ndarray]]]  # per arch, per seed: (val accuracy, cumulative seconds)
    failed: list[list[tuple[float, str]]] = field(default_factory=list)  # per arch: (seconds, status) of bad runs
    tests: list[list[float]] = field(default_factory=list)  # per arch: final test accuracy of each ok seed
    flops: np.ndarray = field(default_factory=lambda: np.zeros(0))  # FLOPs per architecture
    best: float = 0.0
    # Mean final validation accuracy over the judging seeds: what a search's reported score
    # (one seed's validation accuracy) is an estimate of.
    val_truth: np.ndarray = field(default_factory=lambda: np.zeros(0))
    judge: str = "all"  # "all": truth over every seed; "unseen": over the seeds the search cannot observe

    @property
    def size(self) -> int:
        return len(self.sampled)

    def max_seeds(self) -> int:
        """The most complete seeds any architecture has."""
        return max((len(c) for c in self.curves), default=0)

    def judged_on_unseen(self, seed: int) -> Bench:
        """A view for one replay judged on seeds it never sees.

        For each architecture with two or more complete seeds, half of them (rounded down,
        drawn by ``seed``) stay observable: a trial draws its curve from these. The truth
        (mean final test accuracy) and ``val_truth`` come from the other half only. An
        architecture with a single complete seed keeps it on both sides (``load_bench``'s
        judging), as there is nothing else to judge it by.

        Args:
            seed: Draws the split (one per replayed search).

        Returns:
            A new ``Bench`` sharing the table's arrays; ``judge`` is "unseen".
        """
        rng = np.random.default_rng(seed)
        curves: list[list[tuple[np.ndarray, np.ndarray]]] = []
        truth, val_truth = self.truth.copy(), self.val_truth.copy()
        for i, (runs, tests) in enumerate(zip(self.curves, self.tests)):
            if len(runs) < 2:
                curves.append(runs)
                continue
            order = rng.permutation(len(runs))
            seen, judging = sorted(order[: len(runs) // 2]), order[len(runs) // 2:]
            curves.append([runs[j] for j in seen])
            truth[i] = float(np.mean([tests[j] for j in judging]))
            val_truth[i] = float(np.mean([runs[j][0][-1] for j in judging]))
        return replace(self, curves=curves, truth=truth, val_truth=val_truth, best=float(truth.max()), judge="unseen")


def load_bench(path: Path) -> Bench:
    """Read a table for replay.

    Args:
        path: The table (``.db`` or ``.db.gz``).

    Returns:
        The table in memory.

    Raises:
        ConfigError: The file is not a readable table, or holds no architecture with a
            complete run.
    """
    with BenchTable.open(path) as table:
        settings = table.settings
        archs = table.archs()
        curves = table.curves()
        runs = table.runs()
    epochs = int(settings["epochs"])
    by_arch: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    bad: dict[int, list[tuple[float, str]]] = {}
    finals: dict[int, list[float]] = {}
    for arch, seed, status, wall in runs:
        rows = curves.get((arch, seed), [])
        if status == "ok" and len(rows) == epochs:
            by_arch.setdefault(arch, []).append((np.array([r.val_accuracy for r in rows]), np.array([r.wall_s for r in rows])))
            finals.setdefault(arch, []).append(rows[-1].test_accuracy)
        else:
            bad.setdefault(arch, []).append((float(wall), status))
    kept = [a for a in archs if a.arch in by_arch or a.arch in bad]
    if not any(a.arch in by_arch for a in kept):
        raise ConfigError(f"{path}: no architecture has a complete run yet; build the table further first")
    truth = np.array([np.mean(finals[a.arch]) if a.arch in finals else 0.0 for a in kept])
    val_truth = np.array([np.mean([c[0][-1] for c in by_arch[a.arch]]) if a.arch in by_arch else 0.0 for a in kept])
    bench = Bench(space=settings["space"], epochs=epochs, keys={a.key: i for i, a in enumerate(kept)},
                  sampled=[a.sampled for a in kept], params=np.array([a.params for a in kept], dtype=float),
                  truth=truth, curves=[by_arch.get(a.arch, []) for a in kept], failed=[bad.get(a.arch, []) for a in kept],
                  tests=[finals.get(a.arch, []) for a in kept], flops=np.array([a.flops for a in kept], dtype=float),
                  val_truth=val_truth)
    bench.best = float(truth.max())
    return bench


class Snapper:
    """Finds a proposal in the table, or the table architecture nearest to it.

    Distance: over the sampled parameters, a numeric one counts ``|a - b|`` over its range in
    the table, a categorical one 1 when it differs; ties go to the lower index.
    """

    def __init__(self, bench: Bench):
        self.bench = bench
        names = sorted({k for s in bench.sampled for k in s})
        self.numeric: dict[str, float] = {}
        for k in names:
            vals = [s.get(k) for s in bench.sampled]
            nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if len(nums) == len(vals):
                self.numeric[k] = (max(nums) - min(nums)) or 1.0
        self.names = names
        self.snapped = 0
        # Columns, so that a snap is a few numpy operations rather than a Python loop over the table.
        self._columns = {k: [s.get(k) for s in bench.sampled] for k in names}
        self._numbers = {k: np.array(self._columns[k], dtype=float) for k in self.numeric}
        self._differs: dict[tuple[str, type, Any], np.ndarray] = {}

    def _mismatch(self, k: str, a: Any) -> np.ndarray:
        """1.0 where column ``k`` differs from ``a`` (cached per value: categorical columns have few)."""
        try:
            key = (k, type(a), a)
            hit = self._differs.get(key)
        except TypeError:  # an unhashable value: compare without the cache
            return np.array([a != b for b in self._columns[k]], dtype=float)
        if hit is None:
            hit = self._differs[key] = np.array([a != b for b in self._columns[k]], dtype=float)
        return hit

    def find(self, proposal: dict[str, Any]) -> int:
        hit = self.bench.keys.get(arch_key(proposal))
        if hit is not None:
            return hit
        self.snapped += 1
        # The terms are added in name order, as IEEE doubles, so a tie resolves as in a plain loop.
        d = np.zeros(self.bench.size)
        for k in self.names:
            a = proposal.get(k)
            if k in self.numeric and isinstance(a, (int, float)):
                d += np.abs(float(a) - self._numbers[k]) / self.numeric[k]
            else:
                d += self._mismatch(k, a)
        return int(np.argmin(d))  # the first of equal distances: ties go to the lower index
