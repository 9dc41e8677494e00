"""What a driver decides: whether it may start another trial (``Driver``), and how a finished trial is recorded.

``trial_state`` is the one place that decides a finished trial's state; the Tune <-> Optuna
adapter (``rknas.search.tune_adapter.StudySearch``) only collects what it needs and calls it.
Nothing here imports Ray: the adapter's module does, and the runner imports it only when a
search starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Optional

import optuna
from optuna.trial import TrialState

from rknas.events import SearchEvents
from rknas.search.outcome import Values, optuna_state, outcome_of
from rknas.search.space import SearchSpace
from rknas.storage.bulk import counted
from rknas.storage.liveness import Heartbeats, recover_stale
from rknas.storage.record import TrialRecord

clock = time.monotonic  # the clock of --timeout (tests replace it)


class Driver:
    """This process's share of a study that several drivers may work on at once.

    Decides whether this driver may start another trial (``admit``), and marks the trials it
    starts as its own: a heartbeat from the moment the trial is asked for, and its name and
    space revision in the trial's record. Its heartbeats' trial ids are its unfinished trials.

    Attributes:
        name: This driver's id (``rknas.storage.driver_id()``).
        target: The study ends with this many finished trials (interrupted ones do not count).
        deadline: ``clock()`` time after which no trial starts (``--timeout``), or None.
        revision: The space revision this driver's trials record.
        heartbeats: The heartbeats of this driver's running trials.
        events: The search's listener (told of recovered trials), if any.
        stop_reason: Why ``admit`` last refused: "timeout", "done" (the study holds ``target``
            finished trials), "busy" (finished and running trials, of all drivers, reach
            ``target``) or "round" (this Tune round started ``round_limit`` trials); None while
            it admits.
        round_limit: Trials one Tune round starts at most (None: no limit); see ``new_round``.
    """

    def __init__(self, name: str, target: int, heartbeats: Heartbeats, revision: int = 0,
                 deadline: Optional[float] = None, events: Optional[SearchEvents] = None,
                 round_limit: Optional[int] = None):
        self.name = name
        self.target = target
        self.heartbeats = heartbeats
        self.revision = revision
        self.deadline = deadline
        self.events = events
        self.stop_reason: Optional[str] = None
        self.started_count = 0
        self.round_limit = round_limit
        self.round_started = 0
        self.ended_count = 0
        self.outside_training: list[str] = []  # why each of its trials that failed outside training failed

    @staticmethod
    def now() -> float:
        """The ``--timeout`` clock (``time.monotonic``; tests replace the module's ``clock``)."""
        return clock()

    def timed_out(self) -> bool:
        """Whether ``--timeout`` has passed."""
        return self.deadline is not None and clock() >= self.deadline

    def counts(self, study: optuna.Study) -> tuple[int, int]:
        """Count the study's trials, all drivers together, after recovering dead drivers' trials.

        Args:
            study: The study.

        Returns:
            ``(finished, running)``: trials that count towards the target, and RUNNING ones.
        """
        recovered = recover_stale(study)
        if recovered and self.events is not None:
            self.events.recovered(numbers=recovered)
        return counted(study)

    def new_round(self) -> None:
        """A Tune round begins: it may start ``round_limit`` trials.

        Tune's controller keeps every trial of a run in memory, and scans them on every step:
        a driver's memory and CPU per trial would grow with the study. Runs of a bounded number
        of trials keep both flat; the next round starts where the study is.
        """
        self.round_started = 0
        self.stop_reason = None

    def admit(self, study: optuna.Study) -> Optional[str]:
        """Whether another trial may start.

        Args:
            study: The study.

        Returns:
            None if it may, else the reason: "timeout", "done", "busy" or "round" (``stop_reason``).
        """
        if self.timed_out():
            self.stop_reason = "timeout"
        elif self.round_limit is not None and self.round_started >= self.round_limit:
            self.stop_reason = "round"
        else:
            finished, running = self.counts(study)
            self.stop_reason = "done" if finished >= self.target else "busy" if finished + running >= self.target else None
        return self.stop_reason

    def started(self, trial: optuna.Trial) -> None:
        """Mark a trial this driver just asked for as its own: heartbeats, driver name, revision.

        Args:
            trial: The Optuna trial from ``study.ask()``.
        """
        self.heartbeats.add(trial._trial_id)
        self.started_count += 1
        self.round_started += 1
        for key, value in TrialRecord(driver=self.name, space_revision=self.revision).user_attrs().items():
            trial.set_user_attr(key, value)


    def ended(self, outside_training: Optional[str] = None) -> None:
        """One of this driver's trials was recorded.

        Args:
            outside_training: Why it failed, when its worker, node or storage failed it rather
                than its training (a worker death); None otherwise.
        """
        self.ended_count += 1
        if outside_training is not None:
            self.outside_training.append(outside_training)

    def all_failed_outside_training(self) -> Optional[str]:
        """The reason, when every trial this driver recorded failed outside training (none: None).

        A search in which no trial could train says so and fails, rather than reporting a
        study of failed trials as a finished search.
        """
        if self.ended_count and len(self.outside_training) == self.ended_count:
            return self.outside_training[-1]
        return None


def already_finished(study: optuna.Study, trial_id: int) -> Optional[optuna.trial.FrozenTrial]:
    """A trial as stored, if it is finished already (e.g. another driver recovered it).

    Args:
        study: The study.
        trial_id: Optuna's trial id.

    Returns:
        The finished trial, or None while it is not finished.
    """
    t = study._storage.get_trial(trial_id)
    return t if t.state.is_finished() else None


def trial_state(result: Mapping[str, Any], error: bool, space: SearchSpace) -> tuple[TrialState, Values, dict[str, Any]]:
    """Decide how a finished trial is recorded: ``optuna_state(outcome_of(...))`` for a space.

    Args:
        result: The trial's last reported ``EpochResult`` (empty if it reported nothing).
        error: Tune ended the trial with an error (its worker died or the trainable raised).
        space: The search space: its fidelity says what a full trial is, its objectives
            which values to record.

    Returns:
        ``(state, values, attrs)`` (see ``rknas.search.outcome.optuna_state``).
    """
    return optuna_state(outcome_of(result, error, space.metrics, space.fidelity.epochs))


def unless_finished(write: Callable[..., Any], *args: Any) -> None:
    """A write to a trial that another driver may have finished already (then nothing is written)."""
    try:
        write(*args)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # recorded when the trial is told (see tune_adapter.StudySearch)
