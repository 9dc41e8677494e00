"""Trials answered from a benchmark table (``rknas search --table``): the search is real, the training is looked up.

A table-backed trial finds its architecture in the table (or the nearest one the table has,
as a replay does: ``rknas.bench.tableview.Snapper``), draws one of that architecture's runs
(seeds) from the trial's own seed, and plays the recorded curve out: it waits each epoch's recorded
time (times ``time_scale``), then reports that epoch's validation accuracy exactly as a
training trial reports it. Ray Tune, ASHA, the Optuna searcher, the storage, heartbeats,
retries and several drivers all run as in any search, which is what makes such a search a
check of the simulator (``rknas bench replay``) and a way to load a cluster or a database with
thousands of trials at no training cost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from rknas.bench.tableview import Bench, Snapper, load_bench
from rknas.errors import ConfigError
from rknas.search.outcome import EpochResult
from rknas.search.space import SearchSpace
from rknas.storage.racing import REPEAT_CONFIG_KEY


def open_table(path: Path, space: SearchSpace) -> Bench:
    """Read a table for a search of ``space``, refusing one built for another space.

    Args:
        path: The table (``.db`` or ``.db.gz``).
        space: The search's space (with its command-line overrides applied).

    Returns:
        The table in memory.

    Raises:
        ConfigError: The table is unreadable, samples other parameters than the space, or
            recorded another number of epochs than the space trains.
    """
    import optuna

    bench = load_bench(path)
    quiet = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" for the probe
    try:
        probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    finally:
        optuna.logging.set_verbosity(quiet)
    names = set({**space.sample(probe), **probe.params})
    table_names = {k for s in bench.sampled for k in s}
    if names != table_names:
        differ = [f"{', '.join(sorted(a - b))} only in {where}" for a, b, where in (
            (names, table_names, f"space {space.name!r}"), (table_names, names, "the table")) if a - b]
        raise ConfigError(f"--table {path} was built for space {bench.space.get('name')!r}, not {space.name!r} "
                          f"({'; '.join(differ)}): search the table's space, or build a table of this one with "
                          "`rknas bench build`")
    if space.fidelity.epochs != bench.epochs:
        raise ConfigError(f"--table {path}: the table recorded {bench.epochs} epochs per run, the space trains "
                          f"{space.fidelity.epochs}; give --epochs {bench.epochs}")
    return bench


def run_table_trial(config: dict[str, Any], space: SearchSpace, bench: Bench, report: Callable[[EpochResult], None],
                    time_scale: float = 1.0, label: str = "table",
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> EpochResult:
    """One trial answered from the table, calling ``report`` after each recorded epoch.

    Args:
        config: The trial's parameters and constants, with ``seed`` (as a search's trainable gets them).
            A racing repeat's ``REPEAT_CONFIG_KEY`` (``{"first_seed", "repeat"}``) makes it play the
            recorded run ``repeat`` places after the one its configuration's first trial played, around
            the architecture's runs, as a new seed would: while the racing cap is below the table's
            seeds, a configuration's runs never replay one recorded run twice (another trial that
            proposes the same parameters afresh draws its run by its own seed, as before).
        space: The search space (for its size constraints).
        bench: The table.
        report: As for ``objective.run_trial``; may raise to stop the trial (ASHA).
        time_scale: Multiplies the recorded epoch times.
        label: Names the table in ``table_run``.
        sleep: Waits (tests pass a fake).
        clock: The clock ``wall_time`` is measured on.

    Returns:
        The last result reported. An architecture the space's size limits exclude is
        reported once (epoch 0) with its violation, as a real trial is; one whose every table
        run failed ends with ``failed`` after its recorded time.
    """
    t0 = clock()
    seed = int(config.get("seed", 0))
    repeat = config.get(REPEAT_CONFIG_KEY)
    proposal = {k: v for k, v in config.items() if k not in ("seed", REPEAT_CONFIG_KEY)}
    arch = Snapper(bench).find(proposal)
    sizes: EpochResult = {"params": int(bench.params[arch]), "flops": int(bench.flops[arch]) if len(bench.flops) else 0}
    rng = random.Random(seed)
    violation = space.constraints.violation(sizes["params"], sizes["flops"])
    if violation:
        result: EpochResult = {"epoch": 0, "val_accuracy": 0.0, **sizes, "constraint_violation": violation,
                               "table_run": f"{label} arch {arch}"}
        report(result)
        return result
    runs = bench.curves[arch]
    if not runs:
        failed_s, status = rng.choice(bench.failed[arch])
        sleep(max(0.0, failed_s * time_scale))
        result = {"epoch": 0, "val_accuracy": 0.0, **sizes, "failed": 1, "wall_time": clock() - t0,
                  "table_run": f"{label} arch {arch}", "error": f"every run of this architecture in the table failed ({status})"}
        report(result)
        return result
    if isinstance(repeat, dict):  # a racing repeat plays another recorded run than its configuration's first did
        pick = (random.Random(int(repeat["first_seed"])).randrange(len(runs)) + int(repeat["repeat"])) % len(runs)
    else:
        pick = rng.randrange(len(runs))
    val, wall = runs[pick]
    last: EpochResult = {"epoch": 0, "val_accuracy": 0.0, **sizes}
    for epoch in range(1, len(val) + 1):
        due = t0 + float(wall[epoch - 1]) * time_scale  # the recorded times are cumulative from the run's start
        sleep(max(0.0, due - clock()))
        last = {"epoch": epoch, "val_accuracy": float(val[epoch - 1]), **sizes, "wall_time": clock() - t0,
                "table_run": f"{label} arch {arch} run {pick}"}
        report(last)
    return last


def table_trainable(config: dict, bench: Bench, space_dict: dict, time_scale: float, label: str,
                    plugins: Optional[dict] = None) -> None:
    """What runs in a Ray worker for each trial of a table-backed search: nothing is trained, no torch imported.

    The table reaches every node through Ray's object store (``tune.with_parameters``), as the
    data does for training trials.
    """
    from ray import tune

    from rknas.plugins import apply_plugin_env

    if plugins is not None:
        apply_plugin_env(plugins)
    space = SearchSpace.model_validate(space_dict)
    run_table_trial(config, space, bench, report=lambda m: tune.report(dict(m)), time_scale=time_scale, label=label)

