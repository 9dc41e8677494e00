"""Regret: how far what a search would return at each moment lies below the table's best.

For one objective, the returned network is the completed trial with the highest observed
validation accuracy (with racing, ``incumbent``), judged by its architecture's truth (mean test
accuracy over the judging seeds) below the table's best truth. For two (accuracy, parameters),
the regret is the hypervolume of the table's true front minus that of the observed
non-dominated set, both over (truth, log params) normalised to the table's ranges.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from rknas.bench.tableview import Bench

Params = Union[Sequence[float], np.ndarray, Mapping[int, float]]  # parameter count by architecture index
TARGET = 0.003  # "within 0.3 points of the table's best" (accuracy as a fraction)


def hypervolume(points: np.ndarray) -> float:
    """The 2-D hypervolume of points to maximise in both coordinates, over the origin."""
    if len(points) == 0:
        return 0.0
    pts = points[np.argsort(-points[:, 0])]
    hv, best_y = 0.0, 0.0
    for x, y in pts:
        if y > best_y:
            hv += x * (y - best_y)
            best_y = y
    return float(hv)


def normalised(bench: Bench, idx: np.ndarray) -> np.ndarray:
    acc = bench.truth
    lo, hi = acc.min(), acc.max()
    lp = np.log(bench.params)
    plo, phi = lp.min(), lp.max()
    x = (acc[idx] - lo) / ((hi - lo) or 1.0)
    y = (phi - lp[idx]) / ((phi - plo) or 1.0)
    return np.stack([x, y], axis=1)


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Which rows of ``values`` (both maximised) no other row dominates."""
    n = len(values)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        ge = np.all(values >= values[i], axis=1) & np.any(values > values[i], axis=1)
        keep[i] = not ge.any()
    return keep


def incumbent(runs: dict[int, list[float]], race: int, params: Params) -> Optional[tuple[int, float, int]]:
    """The network a racing search returns, and the score and number of runs it reports.

    The rule is the search's (``rknas.storage.racing.RULE``): the most complete runs, counted up
    to the cap ``race``, first; then the best mean over them; a tie goes to fewer parameters,
    then to the architecture that completed a run first.

    Args:
        runs: Architecture -> final validation accuracy of each complete run, in the order the
            architectures first completed a run.
        race: The cap of runs a challenger needs.
        params: Parameter count per architecture.

    Returns:
        ``(architecture, mean, runs)``, or None before any run completed.
    """
    from rknas.storage.racing import ranked

    groups = arch_groups(runs, params)
    if not groups:
        return None
    best = ranked(groups, race)[0]
    return int(best.key), best.mean, best.runs


def returned(done: list[tuple[float, int, float]], race: int, params: Params) -> Iterator[tuple[float, int, float]]:
    """``(time, architecture, reported score)`` each time what a one-objective search returns changes.

    Without racing (``race`` 1) it is the best single run, a tie going to fewer parameters,
    then to the earlier run (the search's rule, ``racing.TIE_RULE``); with racing, ``incumbent``.
    """
    if race <= 1:
        best: Optional[tuple[float, float]] = None  # (score, -parameters) of the returned run
        for t, arch, v in done:
            key = (v, -float(params[arch]))
            if best is None or key > best:
                best = key
                yield t, arch, v
        return
    runs: dict[int, list[float]] = {}
    last: Optional[tuple[int, float]] = None
    for t, arch, v in done:
        runs.setdefault(arch, []).append(v)
        inc = incumbent(runs, race, params)
        if inc is not None and (inc[0], inc[1]) != last:
            last = (inc[0], inc[1])
            yield t, inc[0], inc[1]


def regret_events(bench: Bench, done: list[tuple[float, int, float]], pareto: bool, race: int = 1) -> list[tuple[float, float]]:
    """(time, regret) each time what the search would return changes."""
    events: list[tuple[float, float]] = []
    if not pareto:
        for t, arch, _ in returned(done, race, bench.params):
            regret = bench.best - float(bench.truth[arch])
            if not events or regret != events[-1][1] or race <= 1:
                events.append((t, regret))
        return events
    best_hv = true_hv(bench)
    if race > 1:  # an architecture joins the reported front with its runs, by its mean (racing.front)
        runs: dict[int, list[float]] = {}
        for t, arch, v in done:
            runs.setdefault(arch, []).append(v)
            shown = np.array([int(g.key) for g in raced_front(runs, race, bench.params)])
            regret = best_hv - hypervolume(normalised(bench, shown))
            if not events or regret != events[-1][1]:
                events.append((t, regret))
        return events
    seen: list[tuple[int, float]] = []
    for t, arch, v in done:
        seen.append((arch, v))
        observed = np.array([[val, -bench.params[a]] for a, val in seen])
        front = np.array([a for (a, _), keep in zip(seen, pareto_mask(observed)) if keep])
        regret = best_hv - hypervolume(normalised(bench, front))
        if not events or regret != events[-1][1]:
            events.append((t, regret))
    return events


def arch_groups(runs: dict[int, list[float]], params: Params) -> list[Any]:
    """``racing.Group``s of a replay's architectures: points (validation accuracy, parameters)."""
    from rknas.storage.racing import Group

    return [Group(str(a), list(range(len(v))), list(v), float(params[a]), order, [(x, float(params[a])) for x in v])
            for order, (a, v) in enumerate(runs.items()) if v]


def raced_front(runs: dict[int, list[float]], race: int, params: Params) -> list[Any]:
    """The Pareto set a racing search would report (``racing.front`` over accuracy up, parameters down)."""
    from rknas.storage.racing import front

    return front(arch_groups(runs, params), race, PARETO_SIGNS)


PARETO_SIGNS = (1.0, -1.0)  # validation accuracy up, parameters down


def true_hv(bench: Bench) -> float:
    ok = np.array([i for i in range(bench.size) if bench.curves[i]])
    return hypervolume(normalised(bench, ok))


def worst_regret(bench: Bench, pareto: bool) -> float:
    """The regret of returning nothing (before a search's first completed trial)."""
    if pareto:
        return true_hv(bench)
    ok = [float(bench.truth[i]) for i in range(bench.size) if bench.curves[i]]
    return bench.best - min(ok)


def regret_curve(events: list[tuple[float, float]], grid: np.ndarray, worst: float) -> np.ndarray:
    """A repeat's regret at each grid time (``worst`` before its first result)."""
    out = np.full(len(grid), worst)
    if events:
        times = np.array([t for t, _ in events])
        values = np.array([r for _, r in events])
        idx = np.searchsorted(times, grid, side="right") - 1
        out = np.where(idx >= 0, values[np.clip(idx, 0, None)], worst)
    return out
