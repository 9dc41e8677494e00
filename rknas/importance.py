"""Which searched parameters mattered (Optuna's fANOVA), computed beside the plot.

fANOVA needs scikit-learn, whose import is most of a large report's time. ``ImportanceWorker``
forks early and loads scikit-learn on the other core while the report opens, reads and draws
the study. This module imports only the standard library at the top, so the caller chooses
the moment: the CLI forks once Optuna is imported (the worker needs it too, and importing it
twice cost more than it gained on two cores) and before the storage's and matplotlib's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

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
    import os
    import sys
    import threading

    return ((os.cpu_count() or 1) >= 2 and sys.platform.startswith("linux") and threading.active_count() == 1
            and "sklearn" not in sys.modules)


class ImportanceWorker:
    """Optuna's fANOVA in a process of its own, started before the study is opened.

    scikit-learn's import (one and a half seconds here) then runs on another core while
    this process opens and reads the study; the completed trials go over as plain (params,
    distributions, value) rows, and the plot asks for the answer last. A worker that is not
    needed (fewer than two completed trials) is stopped, not waited for.

    Args:
        context: The multiprocessing context (default: fork).
    """

    def __init__(self, context: Any = None):
        import multiprocessing as mp

        ctx = context or mp.get_context("fork")
        conn, child = ctx.Pipe()
        self._conn: Any = conn
        self._proc: Any = ctx.Process(target=_serve_importances, args=(child,), daemon=True, name="rknas-importances")
        self._proc.start()
        child.close()

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
        try:
            self._conn.send(rows)
        except OSError:  # the worker is gone (killed, out of memory)
            self.close()
            return None
        return self

    def result(self, timeout: Optional[float] = None) -> dict[str, float]:
        """The importances; the worker has exited after.

        Raises:
            TimeoutError: No answer within ``timeout`` seconds.
            EOFError: The worker died (out of memory, killed, its import failed) before answering.
        """
        try:
            if not self._conn.poll(timeout):
                raise TimeoutError(f"no importances within {timeout} s")
            return dict(self._conn.recv())
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker (at once, if it is still importing or computing)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._conn.close()


def _serve_importances(conn: Any) -> None:
    """The worker: import scikit-learn, take the rows, answer once.

    The rows are taken as bytes on a thread as soon as they are sent, so the plotting process
    never blocks on a full socket while scikit-learn is still loading here; they are unpickled
    after the import, on this thread (unpickling imports the classes it meets, and two threads
    importing Optuna at once can see it half initialized). A worker whose import fails exits
    without an answer, and the plotting process computes the importances itself.
    """
    import importlib
    import pickle
    import threading

    received: list[bytes] = []
    reader = threading.Thread(target=_receive, args=(conn, received), daemon=True)
    reader.start()
    try:
        importlib.import_module(_SLOW_IMPORT)
    except Exception:  # any import failure: the plotting process computes them
        return
    reader.join()
    if received:  # none: the plotting process needed no importances, or is gone
        conn.send(_importances_of_rows(pickle.loads(received[0])))


def _receive(conn: Any, into: list[bytes]) -> None:
    try:
        into.append(conn.recv_bytes())
    except EOFError:
        pass


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
