"""``rknas bench replay``: search strategies replayed many times against a table, in processes.

Each repeat is one simulated search (``rknas.bench.simulator``) judged by its regret
(``rknas.bench.regret``); this module runs the repeats in a process pool, summarises each
strategy's anytime regret over them, and writes the JSON and the plot (``rknas.report``).

What a search "returns" at time t is what ``rknas best`` would export: the completed trial with
the highest recorded validation accuracy (for a Pareto study, the observed non-dominated set).
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rknas.bench.noise import noise_summary
from rknas.bench.regret import TARGET, regret_curve, regret_events, returned, worst_regret
from rknas.bench.simulator import Strategy, parse_strategy, simulate
from rknas.bench.tableview import Bench, load_bench
from rknas.errors import ConfigError
from rknas.events import BenchEvents, bench_listener
from rknas.options import BenchReplayOptions

GRID_POINTS = 200  # anytime regret is reported on this many evenly spaced times


def replay_once(bench: Bench, strategy: Strategy, budget_s: float, workers: int, seed: int, pareto: bool = False,
                max_trials: Optional[int] = None, fidelity: Optional[dict[str, int]] = None,
                judge: str = "unseen", start_from: Optional[list[Any]] = None) -> dict[str, Any]:
    """One simulated search (``simulator.simulate``) and its regret.

    Args:
        judge: "unseen": the search observes half of each architecture's seeds and is judged
            on the others (``Bench.judged_on_unseen``, split by ``seed``); "all": it observes
            every seed and is judged on all of them, the ones it saw included.

    Returns:
        ``trials`` (started), ``completed``, ``pruned``, ``failed``, ``repeats`` (re-measurements
        among the completed, with ``+raceN``), ``snapped``, ``events``:
        a list of ``(time, regret)`` at each change of what the search would return,
        ``worst`` (the regret of returning nothing), and ``overstatement``: by how much the
        validation accuracy the search reports for its returned network exceeds that network's
        mean final validation accuracy over the judging seeds (None for a Pareto search or one
        that completed nothing).

    Raises:
        ConfigError: ``+asha`` on a space whose fidelity stops nothing.
    """
    view = bench.judged_on_unseen(seed) if judge == "unseen" else bench
    done, counts = simulate(view, strategy, budget_s, workers, seed, pareto, max_trials, fidelity, start_from)
    over = None
    if not pareto and done:
        *_, (_, arch, reported) = returned(done, strategy.race, view.params)  # what the search returns at the end
        over = reported - float(view.val_truth[arch])
    return {**counts, "events": regret_events(view, done, pareto, strategy.race), "worst": worst_regret(view, pareto),
            "overstatement": over}


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
    judge: str = "unseen"
    overstatement: list[Optional[float]] = field(default_factory=list)  # per repeat (see replay_once)

    def median_overstatement(self) -> Optional[float]:
        """The median over repeats that returned a network (None if none did, or for a Pareto replay)."""
        values = [v for v in self.overstatement if v is not None]
        return float(np.median(values)) if values else None

    def median_time_to_target(self) -> Optional[float]:
        """The median over repeats (a repeat that never got there counts as infinitely slow)."""
        times = sorted(math.inf if t is None else t for t in self.time_to_target)
        m = float(np.median(times)) if times else math.inf
        return None if math.isinf(m) or math.isnan(m) else m

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "median_time_to_target": self.median_time_to_target(),
                "median_overstatement": self.median_overstatement()}


def replay(bench: Bench, strategies: list[Strategy], budget_s: float, workers: int, repeats: int, seed: int = 0,
           pareto: bool = False, max_trials: Optional[int] = None, fidelity: Optional[dict[str, int]] = None,
           jobs: Optional[int] = None, events: Optional[BenchEvents] = None, target: float = TARGET,
           judge: str = "unseen", start_from: Optional[list[Any]] = None) -> list[ReplaySummary]:
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
        events: Told ``replay_repeat`` after each repeat.
        target: The regret counted as reached (``time_to_target``).
        judge: "unseen" or "all" (``replay_once``).
        start_from: What ``+warm`` starts from instead of the table space's ``start_from``.

    Returns:
        One summary per strategy, in order.
    """
    from rknas.plugins import plugin_env

    grid = np.linspace(0.0, budget_s, GRID_POINTS + 1)[1:]
    tasks = [(s, i) for s in strategies for i in range(repeats)]
    results: dict[tuple[str, int], dict[str, Any]] = {}
    jobs = min(jobs or os.cpu_count() or 1, len(tasks))
    args = [(s, budget_s, workers, seed + i, pareto, max_trials, fidelity, judge, start_from) for s, i in tasks]
    done_per: dict[str, int] = {}

    def record(task: tuple[Strategy, int], res: dict[str, Any]) -> None:
        results[(task[0].name, task[1])] = res
        done_per[task[0].name] = done_per.get(task[0].name, 0) + 1
        if events is not None:
            events.replay_repeat(strategy=task[0].name, done=done_per[task[0].name], total=repeats)

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
                    replay_once(bench, s, budget_s, workers, seed, pareto, WARM_UP_TRIALS, fidelity, judge, start_from)
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
        curves = np.array([regret_curve(r["events"], grid, r["worst"]) for r in runs])
        out.append(ReplaySummary(
            strategy=s.name, repeats=repeats, budget_s=budget_s, workers=workers, grid=grid.tolist(),
            median=np.median(curves, axis=0).tolist(), q25=np.percentile(curves, 25, axis=0).tolist(),
            q75=np.percentile(curves, 75, axis=0).tolist(),
            time_to_target=[next((t for t, r in run["events"] if r <= target), None) for run in runs],
            final_regret=curves[:, -1].tolist(), trials=[r["trials"] for r in runs], pruned=[r["pruned"] for r in runs],
            snapped=[r["snapped"] for r in runs], judge=judge, overstatement=[r["overstatement"] for r in runs],
        ))
    return out


def write_outputs(summaries: list[ReplaySummary], out: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """``out``.json (every figure) and ``out``.png (the plot); nothing half-written on a crash."""
    from rknas.util import write_json_atomic

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out.with_suffix(".json"), out.with_suffix(".png")
    doc = {**meta, "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "strategies": [s.to_json() for s in summaries]}
    write_json_atomic(json_path, doc)
    from rknas.report import plot_replay

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
    observable = bench.max_seeds() // 2 if opts.judge == "unseen" else bench.max_seeds()
    too_many = [s.name for s in strategies if s.race > max(observable, 1)]
    if too_many and not (opts.judge == "unseen" and bench.max_seeds() < 2):
        raise ConfigError(f"{', '.join(too_many)}: a repeat needs a seed its architecture has not used, and this table "
                          f"leaves {observable} observable seed(s) per architecture ({bench.max_seeds()} seeds, judged "
                          f"{opts.judge}); race fewer times or build more seeds")
    if opts.judge == "unseen" and bench.max_seeds() < 2:
        raise ConfigError(f"{opts.table}: --judge unseen needs two or more complete seeds of an architecture, and this "
                          "table has one; build more (rknas bench build --seeds 2) or give --judge all")
    fidelity = {k: v for k, v in (("min_epochs", opts.min_epochs), ("reduction_factor", opts.reduction_factor)) if v}
    min_epochs = fidelity.get("min_epochs", bench.space.get("fidelity", {}).get("min_epochs", 2))
    if any(s.asha for s in strategies) and bench.epochs <= min_epochs:
        raise ConfigError(f"+asha: the table's runs have {bench.epochs} epochs, so a first rung at epoch {min_epochs} "
                          "stops nothing; give --min-epochs below it or replay without +asha")
    start_from: Optional[list[Any]] = (
        [{"table": str(opts.warm_from), "top": opts.warm_top}] if opts.warm_from is not None else None)
    if any(s.warm for s in strategies) and not (start_from or bench.space.get("start_from")):
        raise ConfigError("+warm: the table's space has no start_from models to start from; replay without +warm, "
                          "or give --warm-from another table")
    if start_from is not None:
        from rknas.search.space import SearchSpace
        from rknas.search.warmstart import start_params

        start_params(SearchSpace.model_validate(bench.space), start_from, where="--warm-from")  # fits, or one line
    summaries = replay(bench, strategies, opts.budget, opts.workers, opts.repeats, seed=opts.seed, pareto=opts.pareto,
                       max_trials=opts.trials, fidelity=fidelity or None, jobs=opts.jobs, events=bench_listener(opts.on_event),
                       target=opts.target, judge=opts.judge, start_from=start_from)
    files: list[str] = []
    if opts.out is not None:
        meta = {"table": str(opts.table), "archs": bench.size, "best": bench.best, "pareto": opts.pareto,
                "noise": noise_summary(bench.tests, opts.target),
                "target": opts.target, "fidelity": fidelity, "judge": opts.judge,
                "warm_from": None if opts.warm_from is None else {"table": str(opts.warm_from), "top": opts.warm_top},
                "title": f"{Path(opts.table).name}: {opts.repeats} replays, budget {opts.budget / 60:.0f} min, judged on "
                         + ("unseen seeds" if opts.judge == "unseen" else "every seed")
                         + ("" if opts.warm_from is None else f"; +warm from {Path(opts.warm_from).name}")}
        files = [str(p) for p in write_outputs(summaries, opts.out, meta)]
    return {"table": str(opts.table), "archs": bench.size, "best": bench.best, "summaries": summaries, "files": files,
            "noise": noise_summary(bench.tests, opts.target)}


logging.getLogger("ray.tune.schedulers").setLevel(logging.WARNING)
