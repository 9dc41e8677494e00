"""The simulator: one search played out against a table in simulated seconds.

A simulated search is a search with the training looked up: the strategy's sampler (the very
factory ``rknas search`` uses, from the sampler registry) proposes through the space's own
``sample``; the proposal is found in the table (or snapped to its nearest table architecture),
one of that architecture's seeds is drawn, and its recorded curve plays out epoch by epoch in
simulated time on ``workers`` parallel workers. With ``+asha`` each epoch's validation
accuracy goes to the same Ray ``ASHAScheduler`` object a search builds (``runner.make_scheduler``),
driven through its public ``on_trial_add``/``on_trial_result``/``on_trial_complete``, so
the stopping rule is the scheduler's own code. ``+warm`` enqueues the space's ``start_from``
models first, as a search does. ``+raceN`` re-measures a challenger before believing it: an
architecture whose mean so far beats the incumbent's is run again, on a seed it has not used
(the same parameters, asked of the study as an enqueued trial, at full fidelity), up to N runs;
the incumbent is chosen by ``regret.incumbent``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from rknas.bench.tableview import Bench, Snapper
from rknas.errors import ConfigError

PARETO_OBJECTIVES = (("val_accuracy", "maximize"), ("params", "minimize"))
Completed = tuple[float, int, float]  # (simulated time, architecture index, final validation accuracy)


@dataclass(frozen=True)
class Strategy:
    """A replayable strategy: ``<sampler>[+asha][+warm][+raceN]``."""

    sampler: str
    asha: bool = False
    warm: bool = False
    race: int = 1  # runs a challenger needs before it is believed; 1: believe one run

    @property
    def name(self) -> str:
        return (self.sampler + ("+asha" if self.asha else "") + ("+warm" if self.warm else "")
                + (f"+race{self.race}" if self.race > 1 else ""))


def parse_strategy(text: str, known: list[str]) -> Strategy:
    """A strategy from its name.

    Args:
        text: ``random``, ``tpe+asha``, ``tpe+asha+warm``, ``tpe+asha+race2``, ``<plugin sampler>+asha``, ...
        known: The registered sampler names.

    Returns:
        The strategy.

    Raises:
        ConfigError: An unknown sampler or modifier, or a racing cap below 2.
    """
    sampler, *mods = text.strip().split("+")
    if sampler not in known:
        raise ConfigError(f"unknown strategy {text!r}: no sampler {sampler!r}; samplers: {', '.join(known)} "
                          "(add +asha, +warm and/or +raceN, e.g. tpe+asha+warm)")
    races = [m for m in mods if m.startswith("race")]
    bad = [m for m in mods if m not in ("asha", "warm") and m not in races]
    if bad or len(set(mods)) != len(mods) or len(races) > 1:
        raise ConfigError(f"unknown strategy {text!r}: after the sampler only +asha, +warm and +raceN may follow, once each")
    race = 1
    if races:
        digits = races[0][len("race"):]
        if not digits.isdigit() or int(digits) < 2:
            raise ConfigError(f"strategy {text!r}: +raceN needs a whole number of runs N of 2 or more (+race2: a "
                              "challenger is run twice before it is believed)")
        race = int(digits)
    return Strategy(sampler, "asha" in mods, "warm" in mods, race)


@dataclass
class _Running:
    number: int
    ot: Any
    arch: int
    val: np.ndarray
    wall: np.ndarray
    start: float
    fake: Any
    repeat: bool = False  # a re-measurement: runs at full fidelity, outside the scheduler
    seed: int = 0  # which of the architecture's observable runs it plays


def simulate(bench: Bench, strategy: Strategy, budget_s: float, workers: int, seed: int, pareto: bool = False,
             max_trials: Optional[int] = None, fidelity: Optional[dict[str, int]] = None,
             start_from: Optional[list[Any]] = None) -> tuple[list[Completed], dict[str, int]]:
    """One simulated search.

    Args:
        bench: The table.
        strategy: What to simulate.
        budget_s: Simulated wall time; a trial still running at the end does not count.
        workers: Trials run at once.
        seed: Seeds the sampler, the seed draws and the scheduler.
        pareto: Two objectives (validation accuracy, parameter count) instead of one.
        max_trials: Start no more trials than this (None: as many as the budget allows).
        fidelity: ``min_epochs`` / ``reduction_factor`` overriding the table space's (with +asha).
        start_from: What ``+warm`` starts from instead of the table space's ``start_from``
            (entries as a space takes them, e.g. ``{"table": FILE, "top": 5}``: transfer).

    Returns:
        The completed trials in the order they completed, and the counts: ``trials`` (started),
        ``completed``, ``pruned``, ``failed`` and ``snapped`` (proposals not in the table).

    Raises:
        ConfigError: ``+asha`` on a space whose fidelity stops nothing.
    """
    sim = _Simulation(bench, strategy, budget_s, seed, pareto, max_trials, fidelity, start_from)
    done = sim.run(workers)
    return done, {**sim.counts, "snapped": sim.snap.snapped}


class _Simulation:
    """The event loop of one replay: workers free up at recorded epoch times, in simulated seconds."""

    def __init__(self, bench: Bench, strategy: Strategy, budget_s: float, seed: int, pareto: bool,
                 max_trials: Optional[int], fidelity: Optional[dict[str, int]], start_from: Optional[list[Any]] = None):
        import optuna

        from rknas.search.samplers import make_sampler, windowed
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
        if start_from is not None:
            raw["start_from"] = start_from
        self.space = SearchSpace.model_validate(raw)
        self.n_obj = len(self.space.objectives)
        directions = [optuna.study.StudyDirection[d.upper()] for d in self.space.directions]
        sampler = windowed(make_sampler(strategy.sampler, seed, self.n_obj), self.space.sampler_window)
        self.study = optuna.create_study(directions=directions, sampler=sampler)
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
        self.race = strategy.race
        self.runs: dict[int, list[float]] = {}  # arch -> final validation accuracy of each complete run
        self.done_seeds: dict[int, set[int]] = {}  # arch -> the curves (seeds) of its complete runs
        self.racing: set[int] = set()  # archs with a repeat waiting in the study's queue or running
        self.configs: dict[int, dict] = {}  # arch -> the sampled parameters of its first complete run
        self.heap: list[tuple[float, int, int]] = []  # (time, tie, running id; -1: a failed trial's worker)
        self.running: dict[int, _Running] = {}
        self.epoch_of: dict[int, int] = {}
        self.counts = {"trials": 0, "completed": 0, "pruned": 0, "failed": 0, "repeats": 0}
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
        # Warm-start entries and repeats wait in the study's queue, as in a search: the oldest first.
        ot = self.study.ask()
        proposal = {**self.space.sample(ot), **ot.params}
        repeat = "repeat_arch" in ot.user_attrs
        arch = int(ot.user_attrs["repeat_arch"]) if repeat else self.snap.find(proposal)
        self.counts["trials"] += 1
        runs = self.bench.curves[arch]
        if not runs:  # every run of this architecture failed: the trial fails after its recorded time
            failed_s, _ = self.rng.choice(self.bench.failed[arch])
            self.study.tell(ot, state=TrialState.FAIL)
            self.counts["failed"] += 1
            self._push(now + max(failed_s, 1e-9), -1)
            return
        # Every trial of a search has its own seed: a seed this architecture's complete or running
        # trials have not used, while the table has one (a repeat is then never its own twin).
        taken = self.done_seeds.get(arch, set()) | {x.seed for x in self.running.values() if x.arch == arch}
        fresh = [j for j in range(len(runs)) if j not in taken]
        pick = fresh[self.rng.randrange(len(fresh))] if fresh else self.rng.randrange(len(runs))
        val, wall = runs[pick]
        fake = SimpleNamespace(trial_id=f"t{ot.number}")
        if self.scheduler is not None and not repeat:
            self.scheduler.on_trial_add(None, fake)
        self.running[ot.number] = _Running(ot.number, ot, arch, val, wall, now, fake, repeat, pick)
        self._push(now + float(wall[0]), ot.number)

    def _race(self, r: _Running, v: float, done: list[Completed]) -> None:
        """After a complete run: queue the repeat the search would ask for next, if any: the
        whole replay decides, as the search's study does (``rknas.storage.racing.next_repeat``;
        with two objectives ``next_repeat_front``)."""
        from rknas.bench.regret import PARETO_SIGNS, arch_groups
        from rknas.storage.racing import next_repeat, next_repeat_front

        self.runs.setdefault(r.arch, []).append(v)
        self.configs.setdefault(r.arch, dict(r.ot.params))
        if r.repeat:
            self.racing.discard(r.arch)
        if self.race <= 1:
            return
        groups = arch_groups(self.runs, self.bench.params)  # the search's own rule (rknas.storage.racing)
        pending = {str(a) for a in self.racing}  # one repeat of an architecture pending at a time
        if self.n_obj == 1:
            chosen = next_repeat(groups, self.race, pending=pending)
        else:
            chosen = next_repeat_front(groups, self.race, PARETO_SIGNS, pending)
        if chosen is not None:  # the same parameters, asked of the study like any trial (marked with the table architecture)
            arch = int(chosen.key)
            self.racing.add(arch)
            self.study.enqueue_trial(dict(self.configs[arch]), user_attrs={"repeat_arch": arch})

    def run(self, workers: int) -> list[Completed]:
        """Play the search out; returns its completed trials as ``(time, arch, final val accuracy)``."""
        import heapq

        from optuna.trial import TrialState

        done: list[Completed] = []
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
            scheduled = self.scheduler is not None and not r.repeat
            action = self.scheduler.on_trial_result(None, r.fake, result) if scheduled else "CONTINUE"
            last = e == len(r.val)
            if not (last or action == "STOP"):
                self._push(r.start + float(r.wall[e]), rid)
                continue
            if scheduled:
                self.scheduler.on_trial_complete(None, r.fake, result)
            del self.running[rid]
            if last:
                self.study.tell(r.ot, [v, float(self.bench.params[r.arch])] if self.n_obj == 2 else v)
                self.counts["completed"] += 1
                self.counts["repeats"] += r.repeat
                self.done_seeds.setdefault(r.arch, set()).add(r.seed)
                done.append((now, r.arch, v))
                self._race(r, v, done)
            else:
                self.study.tell(r.ot, state=TrialState.PRUNED)
                self.counts["pruned"] += 1
            self.start(now)
        return done
