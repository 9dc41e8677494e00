"""Which searched parameters mattered (Optuna's fANOVA): computed beside the plot, kept with a large study.

fANOVA needs scikit-learn, whose import (a second and a half here) is most of a large report's
time. A large study keeps its importances with the count of completed trials they came from
(``keep_importances``: a search's end, a report of a quiet study), and a report reuses them
while no trial has completed since (``kept_importances``). Otherwise ``ImportanceWorker``
forks and loads scikit-learn on the other core while the report reads the study. This module
imports only the standard library at the top, so the caller chooses the moment to fork.
(Forking in the CLI before the study opened, for every report, made a 10,000-trial report with
kept importances about 0.3 s slower, three processes on two cores, and one without about as
much faster: measured, not kept.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from rknas.forked import ForkedWorker

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from rknas.storage.record import StudyRecord

_SLOW_IMPORT = "optuna.importance._fanova"  # what the worker loads ahead: Optuna's fANOVA and scikit-learn


def parameter_importances(study: optuna.Study, complete: Optional[list[FrozenTrial]] = None) -> dict[str, float]:
    """How much each searched parameter explains validation accuracy (Optuna's fANOVA).

    Args:
        study: The study.
        complete: Its completed trials, when the caller has read them already.

    Returns:
        Parameter -> importance (summing to 1), largest first; empty with fewer than two
        completed trials or nothing searched.
    """
    from optuna.trial import TrialState

    from rknas.storage.bulk import load_trials

    if complete is None:
        complete = load_trials(study, states=(TrialState.COMPLETE,))
    return _importances(complete, list(study.directions), _objective(study))


# From this many completed trials, the importances are kept with the study (``StudyRecord.
# importances``) by a search's end and by a report, and a later report reuses them while no
# trial has completed since: below it, computing them hides behind the rest of a report.
KEPT_FROM = 1000
METHOD = "fanova(seed=0)"  # how they were computed: kept ones computed otherwise are not reused


def kept_importances(record: StudyRecord, complete: int) -> Optional[dict[str, float]]:
    """The importances kept with a study, where they were computed from its current completed trials.

    The completed trials only ever grow (a finished trial never changes), so their count names
    the set the importances were computed from.

    Args:
        record: The study's record.
        complete: How many completed trials the study holds now.

    Returns:
        Parameter -> importance, largest first; None where none are kept for these trials.
    """
    kept = record.importances
    if (not isinstance(kept, dict) or kept.get("complete") != complete or kept.get("method") != METHOD
            or not isinstance(kept.get("values"), dict)):
        return None
    try:
        return {str(k): float(v) for k, v in kept["values"].items()}
    except (TypeError, ValueError):  # not what rknas wrote (a user attribute anyone can set): computed again
        return None


def keep_importances(study: optuna.Study, complete: int, values: dict[str, float]) -> bool:
    """Keep importances computed from ``complete`` completed trials with the study, where it is
    large (``KEPT_FROM``) and takes writes.

    Returns:
        Whether they were kept (a read-only or unreachable storage: not, and nothing raised).
    """
    import datetime
    import logging

    if complete < KEPT_FROM:
        return False
    kept = {"complete": complete, "method": METHOD, "values": {k: float(v) for k, v in values.items()},
            "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    try:
        study.set_user_attr("importances", kept)
    except Exception as exc:  # a cache: a storage that refuses the write costs the next report time, nothing else
        logging.getLogger(__name__).debug("importances not kept with study %s: %s", study.study_name, exc)
        return False
    return True


def keep_with_study(study: optuna.Study) -> Optional[dict[str, float]]:
    """Compute a large study's importances and keep them with it (a search does this as it ends).

    Args:
        study: The study.

    Returns:
        The importances, or None where the study has fewer than ``KEPT_FROM`` completed trials
        or they are kept already.
    """
    from optuna.trial import TrialState

    from rknas.storage.bulk import tally
    from rknas.storage.record import StudyRecord

    complete = tally(study).get(TrialState.COMPLETE.name, 0)
    if complete < KEPT_FROM or kept_importances(StudyRecord.of(study), complete) is not None:
        return None
    from rknas.storage.bulk import load_trials

    trials = load_trials(study, states=(TrialState.COMPLETE,), user_keys=())
    try:
        values = parameter_importances(study, trials)
    except Exception as exc:  # a cache: a search does not fail for it; the report computes them
        import logging

        logging.getLogger(__name__).warning("importances of study %s not computed: %s", study.study_name, exc)
        return None
    keep_importances(study, len(trials), values)
    return values


def _objective(study: optuna.Study) -> int:
    """The index of validation accuracy among the study's objectives."""
    from rknas.storage.record import StudyRecord

    metrics = StudyRecord.of(study).metrics or ["val_accuracy"]
    return metrics.index("val_accuracy") if "val_accuracy" in metrics else 0


def _importances(complete: list[FrozenTrial], directions: list[Any], index: int) -> dict[str, float]:
    import optuna

    if len(complete) < 2 or not any(t.params for t in complete):
        return {}
    try:
        found = optuna.importance.get_param_importances(
            _CompletedTrials(complete, directions), target=lambda t: t.values[index],  # type: ignore[arg-type]
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
        )
    except (RuntimeError, ValueError):  # e.g. every completed trial has the same parameters
        return {}
    return dict(found)


def _can_fork() -> bool:
    import sys

    from rknas.forked import can_fork

    return can_fork() and "sklearn" not in sys.modules


def _load_fanova() -> None:
    import importlib

    importlib.import_module(_SLOW_IMPORT)


class ImportanceWorker(ForkedWorker):
    """Optuna's fANOVA in a process of its own, started before the study is read.

    scikit-learn's import (one and a half seconds here) then runs on another core while
    this process reads the study; the completed trials go over as plain (params,
    distributions, value) rows, and the plot asks for the answer last. A worker that is not
    needed (fewer than two completed trials) is stopped, not waited for.

    Args:
        context: The multiprocessing context (default: fork).
    """

    def __init__(self, context: Any = None):
        super().__init__(_load_fanova, context, name="rknas-importances")

    @classmethod
    def start(cls) -> Optional[ImportanceWorker]:
        """A worker, where a fork is safe and gains (Linux, no other thread, two CPUs), else None."""
        return cls() if _can_fork() else None

    def importances(self, study: optuna.Study, complete: list[FrozenTrial]) -> Optional[ImportanceWorker]:
        """Hand over the completed trials; ``result()`` is then ``parameter_importances(study, complete)``.

        Returns:
            This worker, or None (and the worker stopped) where there is nothing to compute or
            the worker is gone.
        """
        try:
            index = _objective(study)
        except BaseException:  # the study's record could not be read: nothing will be handed over
            self.close()
            raise
        rows = [(t.params, t.distributions, t.values[index]) for t in complete if t.values]
        if len(rows) < 2 or not any(p for p, _, _ in rows):
            self.close()
            return None
        return self if self.submit(_importances_of_rows, rows) else None

    def result(self, timeout: Optional[float] = None) -> dict[str, float]:
        """The importances; the worker has exited after.

        Raises:
            TimeoutError: No answer within ``timeout`` seconds.
            EOFError: The worker died (out of memory, killed, its import failed) before answering.
        """
        try:
            return dict(super().result(timeout))
        finally:
            self.close()


def _importances_of_rows(rows: list[tuple[dict, dict, float]]) -> dict[str, float]:
    import optuna
    from optuna.trial import FrozenTrial, TrialState

    trials = [FrozenTrial(number=i, state=TrialState.COMPLETE, value=None, values=[v], datetime_start=None,
                          datetime_complete=None, params=p, distributions=d, user_attrs={}, system_attrs={},
                          intermediate_values={}, trial_id=i) for i, (p, d, v) in enumerate(rows)]
    return _importances(trials, [optuna.study.StudyDirection.MAXIMIZE], 0)


class _CompletedTrials:
    """What Optuna's importance evaluators read of a study, served from trials already in memory.

    The evaluator reads the study's trials several times; a copy into an in-memory study
    deep-copied every one of them (a second of a ten-thousand-trial report).
    """

    def __init__(self, trials: list[FrozenTrial], directions: list[optuna.study.StudyDirection]):
        self.trials, self.directions = trials, directions

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return [t for t in self.trials if states is None or t.state in states]

    def _is_multi_objective(self) -> bool:
        return len(self.directions) > 1
