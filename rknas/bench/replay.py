"""``rknas bench replay``: a search strategy run against a benchmark table in simulated time.

A replay is a search with the training looked up: the strategy's sampler (the very factory
``rknas search`` uses, from the sampler registry) proposes through the space's own
``sample``; the proposal is found in the table (or snapped to its nearest table architecture),
one of that architecture's seeds is drawn, and its recorded curve plays out epoch by epoch in
simulated time on ``workers`` parallel workers. With ``+asha`` each epoch's validation
accuracy goes to the same Ray ``ASHAScheduler`` object a search builds (``runner.make_scheduler``),
driven through its public ``on_trial_add``/``on_trial_result``/``on_trial_complete``, so
the stopping rule is the scheduler's own code. ``+warm`` enqueues the space's ``start_from``
models first, as a search does.

What a search "returns" at time t is what ``rknas best`` would export: the completed trial with
the highest recorded validation accuracy (for a Pareto study, the observed non-dominated set).
Its regret is judged on the table's truth: the architecture's test accuracy averaged over all
its seeds, below the table's best such mean (for a Pareto study: the hypervolume of the table's
true front minus that of the returned set, both over (mean test accuracy, log params)
normalised to the table's ranges).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rknas.bench.noise import noise_summary
from rknas.bench.table import BenchTable, arch_key
from rknas.errors import ConfigError
from rknas.options import BenchReplayOptions

TARGET = 0.003  # "within 0.3 points of the table's best" (accuracy as a fraction)
GRID_POINTS = 200  # anytime regret is reported on this many evenly spaced times
PARETO_OBJECTIVES = (("val_accuracy", "maximize"), ("params", "minimize"))


@dataclass(frozen=True)
class Strategy:
    """A replayable strategy: ``<sampler>[+asha][+warm]``."""

    sampler: str
    asha: bool = False
    warm: bool = False

    @property
    def name(self) -> str:
        return self.sampler + ("+asha" if self.asha else "") + ("+warm" if self.warm else "")


def parse_strategy(text: str, known: list[str]) -> Strategy:
    """A strategy from its name.

    Args:
        text: ``random``, ``tpe+asha``, ``tpe+asha+warm``, ``<plugin sampler>+asha``, ...
        known: The registered sampler names.

    Returns:
        The strategy.

    Raises:
        ConfigError: An unknown sampler or modifier.
    """
    sampler, *mods = text.strip().split("+")
    if sampler not in known:
        raise ConfigError(f"unknown strategy {text!r}: no sampler {sampler!r}; samplers: {', '.join(known)} "
                          "(add +asha and/or +warm, e.g. tpe+asha+warm)")
    bad = [m for m in mods if m not in ("asha", "warm")]
    if bad or len(set(mods)) != len(mods):
        raise ConfigError(f"unknown strategy {text!r}: after the sampler only +asha and +warm may follow, once each")
    return Strategy(sampler, "asha" in mods, "warm" in mods)


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
    best: float = 0.0

    @property
    def size(self) -> int:
        return len(self.sampled)


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
    bench = Bench(space=settings["space"], epochs=epochs, keys={a.key: i for i, a in enumerate(kept)},
                  sampled=[a.sampled for a in kept], params=np.array([a.params for a in kept], dtype=float),
                  truth=truth, curves=[by_arch.get(a.arch, []) for a in kept], failed=[bad.get(a.arch, []) for a in kept],
                  tests=[finals.get(a.arch, []) for a in kept])
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


def _normalised(bench: Bench, idx: np.ndarray) -> np.ndarray:
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


@dataclass
class _Running:
    number: int
    ot: Any
    arch: int
    val: np.ndarray
    wall: np.ndarray
    start: float
    fake: Any


def replay_once(bench: Bench, strategy: Strategy, budget_s: float, workers: int, seed: int, pareto: bool = False,
                max_trials: Optional[int] = None, fidelity: Optional[dict[str, int]] = None) -> dict[str, Any]:
    """One simulated search.

    Args:
        bench: The table.
        strategy: What to replay.
        budget_s: Simulated wall time; a trial still running at the end does not count.
        workers: Trials run at once.
        seed: Seeds the sampler, the seed draws and the scheduler.
        pareto: Two objectives (validation accuracy, parameter count) instead of one.
        max_trials: Start no more trials than this (None: as many as the budget allows).
        fidelity: ``min_epochs`` / ``reduction_factor`` overriding the table space's (with +asha).

    Returns:
        ``trials`` (started), ``completed``, ``pruned``, ``failed``, ``snapped`` and ``events``:
        a list of ``(time, regret)`` at each change of what the search would return.

    Raises:
        ConfigError: ``+asha`` on a space whose fidelity stops nothing.
    """
    sim = _Simulation(bench, strategy, budget_s, seed, pareto, max_trials, fidelity)
    done = sim.run(workers)
    return {**sim.counts, "snapped": sim.snap.snapped, "events": _regret_events(bench, done, pareto)}


class _Simulation:
    """The event loop of one replay: workers free up at recorded epoch times, in simulated seconds."""

    def __init__(self, bench: Bench, strategy: Strategy, budget_s: float, seed: int, pareto: bool,
                 max_trials: Optional[int], fidelity: Optional[dict[str, int]]):
        import optuna

        from rknas.search.samplers import make_sampler
        from rknas.search.space import SearchSpace
        from rknas.search.warmstart import start_params

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.bench, self.budget_s, self.max_trials = bench, budget_s, max_trials
        self.rng = random.Random(seed)
        np.random.seed(seed % 2**32)  # Ray's ASHA picks brackets with numpy's global generator
        raw = dict(bench.space)
        if pareto:
            raw["objectives"] = [{"metric": m, "direction": d} for m, d in PARETO_OBJECTIVES]
        if fidelity:
            raw["fidelity"] = {**raw.get("fidelity", {}), **fidelity, "early_stopping": True}
        self.space = SearchSpace.model_validate(raw)
        self.n_obj = len(self.space.objectives)
        directions = [optuna.study.StudyDirection[d.upper()] for d in self.space.directions]
        self.study = optuna.create_study(directions=directions, sampler=make_sampler(strategy.sampler, seed, self.n_obj))
        if strategy.warm:
            for p in start_params(self.space):
                self.study.enqueue_trial(p, skip_if_exists=True)
        self.scheduler: Any = None
        if strategy.asha:
            from rknas.search.runner import make_scheduler  # imports Ray's scheduler module (not a Ray cluster)

            self.scheduler = make_scheduler(self.space)
            if type(self.scheduler).__name__ == "FIFOScheduler":
                raise ConfigError("the table's space has no early stopping to replay (fidelity.epochs must exceed min_epochs)")
        self.snap = Snapper(bench)
        self.heap: list[tuple[float, int, int]] = []  # (time, tie, running id; -1: a failed trial's worker)
        self.running: dict[int, _Running] = {}
        self.epoch_of: dict[int, int] = {}
        self.counts = {"trials": 0, "completed": 0, "pruned": 0, "failed": 0}
        self.tie = 0

    def _push(self, t: float, rid: int) -> None:
        import heapq

        self.tie += 1
        heapq.heappush(self.heap, (t, self.tie, rid))

    def start(self, now: float) -> None:
        """A worker is free at ``now``: ask the sampler, find the architecture, draw one of its seeds."""
        from types import SimpleNamespace

        from optuna.trial import TrialState

        if now >= self.budget_s or (self.max_trials is not None and self.counts["trials"] >= self.max_trials):
            return
        ot = self.study.ask()
        arch = self.snap.find({**self.space.sample(ot), **ot.params})
        self.counts["trials"] += 1
        runs = self.bench.curves[arch]
        if not runs:  # every run of this architecture failed: the trial fails after its recorded time
            failed_s, _ = self.rng.choice(self.bench.failed[arch])
            self.study.tell(ot, state=TrialState.FAIL)
            self.counts["failed"] += 1
            self._push(now + max(failed_s, 1e-9), -1)
            return
        val, wall = runs[self.rng.randrange(len(runs))]
        fake = SimpleNamespace(trial_id=f"t{ot.number}")
        if self.scheduler is not None:
            self.scheduler.on_trial_add(None, fake)
        self.running[ot.number] = _Running(ot.number, ot, arch, val, wall, now, fake)
        self._push(now + float(wall[0]), ot.number)

    def run(self, workers: int) -> list[tuple[float, int, float]]:
        """Play the search out; returns its completed trials as ``(time, arch, final val accuracy)``."""
        import heapq

        from optuna.trial import TrialState

        done: list[tuple[float, int, float]] = []
        for _ in range(workers):
            self.start(0.0)
        while self.heap:
            now, _, rid = heapq.heappop(self.heap)
            if now > self.budget_s:
                break
            if rid < 0:
                self.start(now)
                continue
            r = self.running[rid]
            e = self.epoch_of[rid] = self.epoch_of.get(rid, 0) + 1
            v = float(r.val[e - 1])
            if self.n_obj == 1:
                r.ot.report(v, e)
            result = {"epoch": e, "val_accuracy": v}
            action = self.scheduler.on_trial_result(None, r.fake, result) if self.scheduler is not None else "CONTINUE"
            last = e == len(r.val)
            if not (last or action == "STOP"):
                self._push(r.start + float(r.wall[e]), rid)
                continue
            if self.scheduler is not None:
                self.scheduler.on_trial_complete(None, r.fake, result)
            del self.running[rid]
            if last:
                self.study.tell(r.ot, [v, float(self.bench.params[r.arch])] if self.n_obj == 2 else v)
                self.counts["completed"] += 1
                done.append((now, r.arch, v))
            else:
                self.study.tell(r.ot, state=TrialState.PRUNED)
                self.counts["pruned"] += 1
            self.start(now)
        return done


def _regret_events(bench: Bench, done: list[tuple[float, int, float]], pareto: bool) -> list[tuple[float, float]]:
    """(time, regret) each time what the search would return changes."""
    events: list[tuple[float, float]] = []
    if not pareto:
        best_val = -math.inf
        for t, arch, v in done:
            if v > best_val:
                best_val = v
                events.append((t, bench.best - float(bench.truth[arch])))
        return events
    true_hv = _true_hv(bench)
    seen: list[tuple[int, float]] = []
    for t, arch, v in done:
        seen.append((arch, v))
        observed = np.array([[val, -bench.params[a]] for a, val in seen])
        front = np.array([a for (a, _), keep in zip(seen, pareto_mask(observed)) if keep])
        regret = true_hv - hypervolume(_normalised(bench, front))
        if not events or regret != events[-1][1]:
            events.append((t, regret))
    return events


def _true_hv(bench: Bench) -> float:
    ok = np.array([i for i in range(bench.size) if bench.curves[i]])
    return hypervolume(_normalised(bench, ok))


def worst_regret(bench: Bench, pareto: bool) -> float:
    """The regret of returning nothing (before a search's first completed trial)."""
    if pareto:
        return _true_hv(bench)
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


_worker_bench: Optional[Bench] = None
WARM_UP_TRIALS = 12


def _pool_context() -> Any:
    """fork where it is safe (Linux, no other Python thread in this process), else spawn.

    A forked worker starts with this process's imports (Optuna, Ray's scheduler module, the
    plugins), which saves each worker about 5 s: about 10 s of a 50-repeat replay on 2 cores.
    A Python thread could hold a lock at the moment of the fork, so with one running, spawn.
    """
    import multiprocessing as mp
    import sys
    import threading

    if sys.platform.startswith("linux") and threading.active_count() == 1 and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context("spawn")


def _init_worker(bench: Bench, plugins: Optional[dict]) -> None:
    global _worker_bench
    if plugins is not None:
        from rknas.plugins import apply_plugin_env

        apply_plugin_env(plugins)
    _worker_bench = bench


def _one(args: tuple) -> dict[str, Any]:
    assert _worker_bench is not None
    return replay_once(_worker_bench, *args)


@dataclass
class ReplaySummary:
    """What ``replay`` returns for one strategy; ``to_json`` is the file ``--out`` writes."""

    strategy: str
    repeats: int
    budget_s: float
    workers: int
    grid: list[float]
    median: list[float]
    q25: list[float]
    q75: list[float]
    time_to_target: list[Optional[float]]  # per repeat; None: not within the budget
    final_regret: list[float]
    trials: list[int]
    pruned: list[int]
    snapped: list[int]

    def median_time_to_target(self) -> Optional[float]:
        """The median over repeats (a repeat that never got there counts as infinitely slow)."""
        times = sorted(math.inf if t is None else t for t in self.time_to_target)
        m = float(np.median(times)) if times else math.inf
        return None if math.isinf(m) or math.isnan(m) else m

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "median_time_to_target": self.median_time_to_target()}


def replay(bench: Bench, strategies: list[Strategy], budget_s: float, workers: int, repeats: int, seed: int = 0,
           pareto: bool = False, max_trials: Optional[int] = None, fidelity: Optional[dict[str, int]] = None,
           jobs: Optional[int] = None, on_repeat: Any = None, target: float = TARGET) -> list[ReplaySummary]:
    """Replay each strategy ``repeats`` times and summarise its anytime regret.

    Args:
        bench: The table.
        strategies: What to replay.
        budget_s: Simulated wall time per search.
        workers: Simulated parallel workers.
        repeats: Searches per strategy (repeat i is seeded ``seed + i``).
        seed: The first repeat's seed.
        pareto: Replay a two-objective (accuracy, params) search; regret is hypervolume.
        max_trials: Cap on trials per search.
        fidelity: ASHA overrides (``min_epochs``, ``reduction_factor``).
        jobs: Processes (default: the CPU count); 1 runs in this process.
        on_repeat: Called as ``on_repeat(strategy_name, done, total)`` after each repeat.
        target: The regret counted as reached (``time_to_target``).

    Returns:
        One summary per strategy, in order.
    """
    from rknas.plugins import plugin_env

    grid = np.linspace(0.0, budget_s, GRID_POINTS + 1)[1:]
    worst = worst_regret(bench, pareto)
    tasks = [(s, i) for s in strategies for i in range(repeats)]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    jobs = min(jobs or os.cpu_count() or 1, len(tasks))
    args = [(s, budget_s, workers, seed + i, pareto, max_trials, fidelity) for s, i in tasks]
    done_per: dict[str, int] = {}

    def record(task: tuple[Strategy, int], res: dict[str, Any]) -> None:
        results[(task[0].name, task[1])] = res
        done_per[task[0].name] = done_per.get(task[0].name, 0) + 1
        if on_repeat is not None:
            on_repeat(task[0].name, done_per[task[0].name], repeats)

    if jobs <= 1:
        for task, a in zip(tasks, args):
            record(task, replay_once(bench, *a))
    else:
        ctx = _pool_context()
        global _worker_bench
        init: Any = None
        initargs: tuple[Any, ...] = ()
        try:
            if ctx.get_start_method() == "fork":
                # A short replay of each strategy here first: its imports and first-call costs
                # are then inherited by every worker instead of paid in each.
                for s in strategies:
                    replay_once(bench, s, budget_s, workers, seed, pareto, WARM_UP_TRIALS, fidelity)
                _worker_bench = bench
            else:
                init, initargs = _init_worker, (bench, plugin_env())
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=init, initargs=initargs) as pool:
                with warnings.catch_warnings():
                    # Python >= 3.12 warns at any fork of a process with native threads; the ones
                    # here (BLAS pools, Ray's jemalloc) reset themselves at fork, and
                    # _pool_context forks only where no other Python thread runs.
                    warnings.filterwarnings("ignore", r".*multi-threaded, use of fork\(\)", DeprecationWarning)
                    results_iter = pool.map(_one, args)
                for task, res in zip(tasks, results_iter):
                    record(task, res)
        finally:
            _worker_bench = None
    out = []
    for s in strategies:
        runs = [results[(s.name, i)] for i in range(repeats)]
        curves = np.array([regret_curve(r["events"], grid, worst) for r in runs])
        out.append(ReplaySummary(
            strategy=s.name, repeats=repeats, budget_s=budget_s, workers=workers, grid=grid.tolist(),
            median=np.median(curves, axis=0).tolist(), q25=np.percentile(curves, 25, axis=0).tolist(),
            q75=np.percentile(curves, 75, axis=0).tolist(),
            time_to_target=[next((t for t, r in run["events"] if r <= target), None) for run in runs],
            final_regret=curves[:, -1].tolist(), trials=[r["trials"] for r in runs], pruned=[r["pruned"] for r in runs],
            snapped=[r["snapped"] for r in runs],
        ))
    return out


def replay_figure(summaries: list[ReplaySummary], title: str, pareto: bool, target: float = TARGET) -> Any:
    """Anytime regret, median and quartiles over repeats, one line per strategy (a matplotlib Figure).

    ``target`` (a fraction of accuracy, as ``--target``) is drawn and labelled as it is.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in summaries:
        x = np.array(s.grid) / 60.0
        y = np.array(s.median) * (1 if pareto else 100)
        (line,) = ax.plot(x, y, label=f"{s.strategy} (median of {s.repeats})")
        ax.fill_between(x, np.array(s.q25) * (1 if pareto else 100), np.array(s.q75) * (1 if pareto else 100),
                        color=line.get_color(), alpha=0.2)
    if not pareto:
        points = f"{target * 100:g} point{'' if target * 100 == 1 else 's'}"
        ax.axhline(target * 100, color="grey", linestyle="--", linewidth=1, label=f"target: {points}")
    ax.set_xlabel(f"simulated time (minutes, {summaries[0].workers} workers)")
    ax.set_ylabel("hypervolume regret" if pareto else "regret (test accuracy points below the table's best)")
    ax.set_yscale("symlog", linthresh=0.1 if not pareto else 0.01)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_replay(summaries: list[ReplaySummary], path: Path, title: str, pareto: bool, target: float = TARGET) -> None:
    """Write ``replay_figure`` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = replay_figure(summaries, title, pareto, target)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(summaries: list[ReplaySummary], out: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """``out``.json (every figure) and ``out``.png (the plot); nothing half-written on a crash."""
    from rknas.util import write_json_atomic

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    doc = {**meta, "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "strategies": [s.to_json() for s in summaries]}
    write_json_atomic(json_path, doc)
    plot_replay(summaries, png_path, meta.get("title", "replay"), bool(meta.get("pareto")), float(meta.get("target", TARGET)))
    return json_path, png_path


DEFAULT_STRATEGIES = ("random", "random+asha", "tpe", "tpe+asha", "tpe+asha+warm")
PARETO_STRATEGIES = ("random", "tpe", "nsga2")


def run_replay(opts: BenchReplayOptions) -> dict[str, Any]:
    """``rknas bench replay``: check everything, replay, write the JSON and PNG.

    Args:
        opts: The replay's options.

    Returns:
        ``table``, ``archs``, ``best`` (the table's best mean test accuracy), ``summaries``
        (one ``ReplaySummary`` per strategy) and ``files`` (what was written).

    Raises:
        ConfigError: An unknown strategy, a single-objective sampler with ``--pareto``,
            ``+asha`` or ``+warm`` the table's space cannot replay, or a table that is not
            readable; nothing is written then.
    """
    from rknas.search.samplers import registered_samplers

    known = registered_samplers()
    names = opts.strategy or list(PARETO_STRATEGIES if opts.pareto else DEFAULT_STRATEGIES)
    strategies = [parse_strategy(n, list(known)) for n in names]
    if opts.pareto:
        single = [s.name for s in strategies if not known[s.sampler].multi_objective]
        if single:
            raise ConfigError(f"--pareto: {', '.join(single)} handle one objective; choose samplers among "
                              f"{', '.join(n for n, k in known.items() if k.multi_objective)}")
    bench = load_bench(opts.table)
    fidelity = {k: v for k, v in (("min_epochs", opts.min_epochs), ("reduction_factor", opts.reduction_factor)) if v}
    min_epochs = fidelity.get("min_epochs", bench.space.get("fidelity", {}).get("min_epochs", 2))
    if any(s.asha for s in strategies) and bench.epochs <= min_epochs:
        raise ConfigError(f"+asha: the table's runs have {bench.epochs} epochs, so a first rung at epoch {min_epochs} "
                          "stops nothing; give --min-epochs below it or replay without +asha")
    if any(s.warm for s in strategies) and not bench.space.get("start_from"):
        raise ConfigError("+warm: the table's space has no start_from models to start from; replay without +warm")
    summaries = replay(bench, strategies, opts.budget, opts.workers, opts.repeats, seed=opts.seed, pareto=opts.pareto,
                       max_trials=opts.trials, fidelity=fidelity or None, jobs=opts.jobs, on_repeat=opts.on_event,
                       target=opts.target)
    files: list[str] = []
    if opts.out is not None:
        meta = {"table": str(opts.table), "archs": bench.size, "best": bench.best, "pareto": opts.pareto,
                "noise": noise_summary(bench.tests, opts.target),
                "target": opts.target, "fidelity": fidelity,
                "title": f"{Path(opts.table).name}: {opts.repeats} replays, budget {opts.budget / 60:.0f} min"}
        files = [str(p) for p in write_outputs(summaries, opts.out, meta)]
    return {"table": str(opts.table), "archs": bench.size, "best": bench.best, "summaries": summaries, "files": files,
            "noise": noise_summary(bench.tests, opts.target)}


logging.getLogger("ray.tune.schedulers").setLevel(logging.WARNING)
