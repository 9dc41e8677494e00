"""The Tune <-> Optuna adapter: Optuna proposes, Tune runs, the study records.

``trial_state`` is the one place that decides how a finished trial is recorded; the
adapter (``StudySearch``, built on Ray's ``OptunaSearch``) only collects what it needs and
calls it. Ray is imported when the adapter is built, not when this module is imported.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Optional, Union

import optuna
from optuna.trial import TrialState

from rknas.errors import ConfigError
from rknas.search.space import SearchSpace
from rknas.storage.liveness import Heartbeats, recover_stale
from rknas.storage.queries import finished_trials
from rknas.storage.record import TrialRecord

WORKER_CRASHED = "the trial's worker crashed (see the Ray logs)"

Values = Union[float, list[float], None]

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
        stop_reason: Why ``admit`` last refused: "timeout", "done" (the study holds ``target``
            finished trials) or "busy" (finished and running trials, of all drivers, reach
            ``target``); None while it admits.
    """

    def __init__(self, name: str, target: int, heartbeats: Heartbeats, revision: int = 0,
                 deadline: Optional[float] = None, events: Optional[Callable[[str, dict], None]] = None):
        self.name = name
        self.target = target
        self.heartbeats = heartbeats
        self.revision = revision
        self.deadline = deadline
        self.events = events
        self.stop_reason: Optional[str] = None
        self.started_count = 0

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
        if recovered and self.events:
            self.events("recovered", {"numbers": recovered})
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        return len(finished_trials(study)), running

    def admit(self, study: optuna.Study) -> Optional[str]:
        """Whether another trial may start.

        Args:
            study: The study.

        Returns:
            None if it may, else the reason: "timeout", "done" or "busy" (``stop_reason``).
        """
        if self.timed_out():
            self.stop_reason = "timeout"
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
        for key, value in TrialRecord(driver=self.name, space_revision=self.revision).user_attrs().items():
            trial.set_user_attr(key, value)


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
    """Decide how a finished trial is recorded.

    Args:
        result: The trial's last reported ``EpochResult`` (empty if it reported nothing).
        error: Tune ended the trial with an error (its worker died or the trainable raised).
        space: The search space: its fidelity says what a full trial is, its objectives
            which values to record.

    Returns:
        ``(state, values, attrs)``: the Optuna state; the objective values for COMPLETE
        (a float with one objective, a list with several), else None; and the
        ``TrialRecord`` fields that say why (``fail_reason``, ``constraint_violation``,
        ``diverged``, ``pruned_at_epoch``). A diverged trial is PRUNED, not FAIL: the
        sampler ignores FAIL trials but learns from PRUNED ones (ranked by their last
        intermediate value, here 0.0), so it stops proposing the region that diverges.
    """
    epochs = int(result.get("epoch", 0) or 0)
    if error or result.get("failed"):
        return TrialState.FAIL, None, {"fail_reason": result.get("error") or WORKER_CRASHED}
    if result.get("diverged"):
        return TrialState.PRUNED, None, {"diverged": result["diverged"]}
    if result.get("constraint_violation"):
        return TrialState.PRUNED, None, {"constraint_violation": result["constraint_violation"]}
    if epochs < space.fidelity.epochs:
        return TrialState.PRUNED, None, {"pruned_at_epoch": epochs}
    values = [float(result[m]) for m in space.metrics]
    bad = [m for m, v in zip(space.metrics, values) if not math.isfinite(v)]
    if bad:
        return TrialState.FAIL, None, {"fail_reason": f"non-finite {', '.join(bad)} after {epochs} epochs"}
    return TrialState.COMPLETE, (values if len(values) > 1 else values[0]), {}


def searcher_class() -> type:
    """``StudySearch``: Ray's ``OptunaSearch`` recording rknas's trial record (imports Ray)."""
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that records a ``TrialRecord`` with each Optuna trial.

        Early-stopped trials become PRUNED (Tune reports them as complete), trials that
        failed inside the objective become FAIL with their reason (see ``trial_state``).
        """

        def __init__(self, *args: Any, rk_space: SearchSpace, rk_versions: dict[str, str],
                     rk_events: Optional[Callable[[str, dict], None]] = None, rk_driver: Optional[Driver] = None,
                     **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._rk_space = rk_space
            self._rk_versions = rk_versions
            self._rk_history: dict[str, list[float]] = defaultdict(list)
            self._rk_events = rk_events
            self._rk_driver = rk_driver
            self._rk_configs: dict[str, dict] = {}
            self._pending_errors: dict[str, tuple[Any, TrialRecord]] = {}

        def suggest(self, trial_id: str) -> Optional[dict]:
            driver = self._rk_driver
            if driver is not None and trial_id not in self._ot_trials:
                # The study, not Tune's sample count, decides: no new trial once the finished
                # and running trials of all drivers reach the target, or after --timeout.
                assert self._ot_study is not None
                if driver.admit(self._ot_study) is not None:
                    return self.FINISHED  # Ray's marker string: this round starts no more trials
                with warnings.catch_warnings():  # heartbeats with ask/tell are deliberate (rknas.storage.liveness)
                    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
                    ot = self._ot_study.ask()
                driver.started(ot)
                self._ot_trials[trial_id] = ot
            config = super().suggest(trial_id)
            if config is not None:
                self._rk_configs[trial_id] = dict(config)
            return config

        def save(self, checkpoint_path: str) -> None:
            """No searcher pickle: the Optuna study in storage is the resumable record."""

        def restore(self, checkpoint_path: str) -> None:
            """See ``save``: resuming reloads the study instead."""

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if result.get("failed") or result.get("constraint_violation") or not result.get("epoch"):
                return
            self._rk_history[trial_id].append(result["val_accuracy"])
            if not isinstance(self.metric, list):
                _unless_finished(self._ot_trials[trial_id].report, result["val_accuracy"], int(result["epoch"]))

        def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot = self._ot_trials[trial_id]
            space = self._rk_space
            result = result or {}
            history = self._rk_history.pop(trial_id, [])
            # Tune hands the last result only to on_trial_complete, not to on_trial_result.
            epoch = int(result.get("epoch", 0) or 0)
            if epoch > len(history) and not result.get("failed") and not result.get("constraint_violation"):
                history.append(result["val_accuracy"])
                if not isinstance(self.metric, list):
                    _unless_finished(ot.report, result["val_accuracy"], epoch)
            params = self._rk_configs.pop(trial_id, None) or {**ot.params, **(result.get("config") or {})}
            record = TrialRecord(val_accuracy_per_epoch=history, seed=params.get("seed"))
            for key in ("params", "flops", "wall_time", "val_loss", "train_loss", "device", "threads", "gpu_memory_mib"):
                if key in result:
                    setattr(record, key, result[key])
            try:
                network, training = space.configs(params, seed=int(params.get("seed", 0)))
            except ConfigError:
                pass  # the trial failed on the same call and its reason is recorded
            else:
                record.network = network.model_dump(mode="json")
                record.training = training.model_dump(mode="json")
                record.strategy_versions = {n: self._rk_versions.get(n, "?") for n in network.strategy}
            state, values, why = trial_state(result, error, space)
            for key, value in why.items():
                setattr(record, key, value)
            # Optuna's convention: <= 0 is feasible; constrained samplers steer away from the rest.
            for key, limit in (("params", space.constraints.max_params), ("flops", space.constraints.max_flops)):
                if limit is not None and key in result:
                    _unless_finished(ot.set_constraint, f"max_{key}", (result[key] - limit) / limit)
            self._completed_trials.add(trial_id)
            if error and not result.get("failed"):
                # The worker died: Tune tells the searcher first and the callbacks (which can
                # read the error) right after, so the trial is recorded once the reason is in.
                self._pending_errors[trial_id] = (ot, record)
                return
            self._record(trial_id, ot, record, state, values)

        def record_error(self, trial_id: str, reason: str) -> None:
            """Record a trial whose worker died, now that the reason is known."""
            if trial_id in self._pending_errors:
                ot, record = self._pending_errors.pop(trial_id)
                record.fail_reason = reason
                self._record(trial_id, ot, record, TrialState.FAIL, None)

        def flush_errors(self) -> None:
            """Record every dead trial whose reason never arrived."""
            for trial_id in list(self._pending_errors):
                self.record_error(trial_id, WORKER_CRASHED)

        def _record(self, trial_id: str, ot: Any, record: TrialRecord, state: TrialState, values: Values) -> None:
            assert self._ot_study is not None  # OptunaSearch creates it before the first suggest
            driver = self._rk_driver
            if driver is not None:
                record.driver, record.space_revision = driver.name, driver.revision
            note, shown = None, state.name
            try:
                for k, v in record.user_attrs().items():
                    ot.set_user_attr(k, v)
                self._ot_study.tell(ot, values, state=state)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
                # Another driver recovered the trial (it took our heartbeats for a dead
                # driver's): its record stands, this result is dropped, the search goes on.
                done = already_finished(self._ot_study, ot._trial_id)
                if done is None:
                    raise
                shown, why = done.state.name, TrialRecord.of(done).fail_reason
                note = (f"finished by another driver as {shown} before this one could record its {state.name} result "
                        f"(dropped){': ' + why if why else ''}")
                record, values = TrialRecord.of(done), done.values
            finally:
                if driver is not None:
                    driver.heartbeats.remove(ot._trial_id)
            if self._rk_events:
                self._rk_events("trial_end", {"trial_id": trial_id, "number": ot.number, "state": shown,
                                              "record": record, "values": values, "note": note})

        def unfinished(self) -> list[int]:
            """Optuna ids of the trials this searcher asked for and has not told yet."""
            return [ot._trial_id for tid, ot in self._ot_trials.items()
                    if tid not in self._completed_trials or tid in self._pending_errors]

    return StudySearch


def _unless_finished(write: Callable[..., Any], *args: Any) -> None:
    """A write to a trial that another driver may have finished already (then nothing is written)."""
    try:
        write(*args)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # recorded when the trial is told (see StudySearch._record)


def error_line(error_file: Optional[str]) -> str:
    """The most telling line of the error Tune saved for a trial."""
    try:
        text = open(error_file).read() if error_file else ""
    except OSError:
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "died" in ln.lower() or "exit" in ln.lower() or "killed" in ln.lower():
            return f"the trial's worker crashed: {ln[:300]}"
    return f"the trial's worker crashed: {lines[-1][:300]}" if lines else WORKER_CRASHED


def tune_callback(events: Callable[[str, dict], None], searcher: Any) -> Any:
    """A Tune callback that forwards trial starts and results, and worker deaths' reasons."""
    from ray.tune import Callback

    class Events(Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            events("trial_start", {"trial_id": trial.trial_id})

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            events("trial_result", {"trial_id": trial.trial_id, "result": result})

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            searcher.record_error(trial.trial_id, error_line(trial.error_file))

    return Events()
