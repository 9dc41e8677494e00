"""The Tune side of a search: Ray's ``OptunaSearch`` recording rknas's trial record.

This module imports Ray at the top; ``rknas.search.runner`` imports it only when a search
starts, so everything else (the CLI, ``best``, ``report``) stays free of Ray's import cost.

Pickling. Ray Tune pickles the search algorithm when a ``Tuner`` is built (the experiment
state it keeps for ``Tuner.restore``). The live objects a searcher holds (the Optuna study,
its storage and sampler, the driver with its heartbeat thread, the event sink) need not
pickle, and some do not (Optuna 5.1's ``NSGAIISampler`` holds a lock; a database connection
never will): ``StudySearch.__getstate__`` leaves them out. rknas never restores a searcher
from Tune's copy (the study in storage is the resumable record); a copy that is unpickled
anyway is *detached* and refuses to suggest until ``attach`` hands it a study again.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any, Optional, Union

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from rknas.errors import ConfigError
from rknas.events import EventSink, SearchEvents, search_listener
from rknas.search.outcome import MEASUREMENTS, WORKER_CRASHED, Values, ended_early, worker_death_reason
from rknas.search.searcher import Driver, already_finished, trial_state, unless_finished
from rknas.search.space import SearchSpace
from rknas.storage.racing import REPEAT_CONFIG_KEY
from rknas.storage.record import TrialRecord
from rknas.storage.retry import StorageUnavailable

# What a StudySearch holds that lives in this process only: left out of its pickle.
LIVE = ("_sampler", "_storage", "_ot_study", "_ot_trials", "_rk_driver", "_rk_events", "_pending_errors",
        "_rk_storage_error", "_rk_complete")


class DetachedSearcherError(RuntimeError):
    """A searcher unpickled from Tune's experiment state was used before ``attach``."""


class StudySearch(OptunaSearch):
    """OptunaSearch that records a ``TrialRecord`` with each Optuna trial.

    Early-stopped trials become PRUNED (Tune reports them as complete), trials that failed
    inside the objective become FAIL with their reason (see ``searcher.trial_state``).
    """

    def __init__(self, *args: Any, rk_space: SearchSpace, rk_versions: dict[str, str],
                 rk_events: Union[SearchEvents, EventSink, None] = None, rk_driver: Optional[Driver] = None,
                 rk_max_retries: int = 2, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._rk_space = rk_space
        self._rk_versions = rk_versions
        self._rk_history: dict[str, list[float]] = defaultdict(list)
        self._rk_events: Optional[SearchEvents] = search_listener(rk_events)
        self._rk_driver = rk_driver
        self._rk_max_retries = rk_max_retries
        self._rk_configs: dict[str, dict] = {}
        self._pending_errors: dict[str, tuple[Any, TrialRecord]] = {}
        self._rk_retries: dict[str, list[str]] = defaultdict(list)
        self._rk_detached = False
        # A storage failure while recording a result: Tune logs and swallows errors raised in
        # on_trial_complete, so the next suggest raises it and fit ends (see _record).
        self._rk_storage_error: Optional[StorageUnavailable] = None
        self._rk_complete: Any = None  # racing's reader of the complete trials (storage.queries.lean_complete)

    # ---- pickling (see the module docstring) ---------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in LIVE:
            state[key] = None
        state["_rk_detached"] = True
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._ot_trials = {}
        self._pending_errors = {}

    def attach(self, study: optuna.Study, driver: Optional[Driver] = None,
               events: Union[SearchEvents, EventSink, None] = None) -> None:
        """Reconnect an unpickled copy to a study, its storage and sampler.

        Args:
            study: The study this searcher records into (its storage and sampler are used).
            driver: The driver whose share of the study this searcher runs, if any.
            events: The search's listener (or a callable ``(kind, data)``), if any.
        """
        self._ot_study = study  # type: ignore[assignment]  # Ray declares it as None until _setup_study
        self._rk_complete = None
        self._storage, self._sampler = study._storage, study.sampler
        self._rk_driver, self._rk_events = driver, search_listener(events)
        self._rk_detached = False

    def _check_attached(self) -> None:
        if self._rk_detached:
            raise DetachedSearcherError(
                "this searcher was unpickled from Tune's experiment state, which leaves out the study, storage "
                "and sampler: call attach(study) first (rknas resumes from the study, not from Tune's state)")

    # ---- Tune's searcher interface ---------------------------------------------------------
    def suggest(self, trial_id: str) -> Optional[dict]:
        self._check_attached()
        if self._rk_storage_error is not None:
            raise self._rk_storage_error
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
        if ended_early(result) or not result.get("epoch"):
            return
        # Each epoch once: an attempt that starts again at an earlier epoch (its worker died before
        # a checkpoint, as a table trial's always does) replaces the curve from there on.
        history = self._rk_history[trial_id]
        del history[int(result["epoch"]) - 1:]
        history.append(result["val_accuracy"])
        if not isinstance(self.metric, list):
            unless_finished(self._ot_trials[trial_id].report, result["val_accuracy"], int(result["epoch"]))

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        self._check_attached()
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot = self._ot_trials[trial_id]
        space = self._rk_space
        result = result or {}
        history = self._rk_history.pop(trial_id, [])
        # Tune hands the last result only to on_trial_complete, not to on_trial_result.
        epoch = int(result.get("epoch", 0) or 0)
        if epoch > len(history) and not ended_early(result):
            history.append(result["val_accuracy"])
            if not isinstance(self.metric, list):
                unless_finished(ot.report, result["val_accuracy"], epoch)
        params = self._rk_configs.pop(trial_id, None) or {**ot.params, **(result.get("config") or {})}
        retries = self._rk_retries.pop(trial_id, [])
        record = TrialRecord(val_accuracy_per_epoch=history, seed=params.get("seed"), attempts=1 + len(retries),
                             retry_reasons=retries or None)
        for key in MEASUREMENTS:
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
        for name, value in space.constraints.constraint_values(result.get("params"), result.get("flops")).items():
            unless_finished(ot.set_constraint, name, value)
        self._completed_trials.add(trial_id)
        if error and not result.get("failed"):
            # The worker died: Tune tells the searcher first and the callbacks (which can
            # read the error) right after, so the trial is recorded once the reason is in.
            self._pending_errors[trial_id] = (ot, record)
            return
        self._record(trial_id, ot, record, state, values)

    # ---- rknas's additions ----------------------------------------------------------------
    def note_retry(self, trial_id: str, reason: str) -> None:
        """A trial's worker died and Tune runs the trial again (from its last finished epoch).

        The sampler hears nothing of it: the trial ends once, with the result of its last attempt.
        """
        self._rk_retries[trial_id].append(reason)
        ot = self._ot_trials.get(trial_id)
        if self._rk_events is not None and ot is not None:
            self._rk_events.trial_retry(trial_id=trial_id, number=ot.number, reason=reason,
                                        attempt=1 + len(self._rk_retries[trial_id]))

    def record_error(self, trial_id: str, reason: str) -> None:
        """Record a trial whose worker died, now that the reason is known.

        A worker death is an infrastructure failure, never counted against the space while
        retries are left. Tune gives up on a trial early when a second future of the same dead
        worker fails after the trial was set to PENDING for its retry (Ray 2.60's
        ``_process_trial_failure`` errors a PENDING trial without checking its failure count).
        Seen when the worker dies while Tune is still setting the trial up on it (two calls in
        flight; 1 of 4 kills), not when it dies inside training (0 of 8; test_search_faults).
        Such a trial is recorded as interrupted (not counted, the sampler does not learn from
        it) and its configuration, seed included, is enqueued to run again as a new trial.
        """
        if trial_id in self._pending_errors:
            ot, record = self._pending_errors.pop(trial_id)
            attempts = record.attempts or 1
            if attempts <= self._rk_max_retries and self._ot_study is not None:
                record.interrupted = True
                record.fail_reason = (f"{reason}; Ray Tune gave up after {attempts} of {1 + self._rk_max_retries} attempts "
                                      "(a second error from the same dead worker): not counted, its configuration runs "
                                      "again as a new trial")
                again = {k: ot.user_attrs[k] for k in ("repeat_of", "repeat") if k in ot.user_attrs}  # a repeat stays one
                self._ot_study.enqueue_trial(dict(ot.params), user_attrs=again or None, skip_if_exists=False)
            else:
                record.fail_reason = reason
            self._record(trial_id, ot, record, TrialState.FAIL, None, outside_training=reason)

    def flush_errors(self) -> None:
        """Record every dead trial whose reason never arrived."""
        for trial_id in list(self._pending_errors):
            self.record_error(trial_id, WORKER_CRASHED)

    def _record(self, trial_id: str, ot: Any, record: TrialRecord, state: TrialState, values: Values,
                outside_training: Optional[str] = None) -> None:
        assert self._ot_study is not None  # OptunaSearch creates it before the first suggest
        driver = self._rk_driver
        if driver is not None:
            record.driver, record.space_revision = driver.name, driver.revision
            driver.ended(outside_training)
        note, shown = None, state.name
        try:
            for k, v in record.user_attrs().items():
                ot.set_user_attr(k, v)
            self._ot_study.tell(ot, values, state=state)
        except StorageUnavailable as exc:
            self._rk_storage_error = exc
            raise
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
        if self._rk_events is not None:
            self._rk_events.trial_end(trial_id=trial_id, number=ot.number, state=shown, record=record, values=values,
                                      note=note)
        if note is None and state == TrialState.COMPLETE and self._rk_space.racing > 1:
            try:
                self._race(ot)
            except StorageUnavailable as exc:
                self._rk_storage_error = exc
                raise

    def _race(self, ot: Any) -> None:
        """Racing: after a complete run, ask for the re-measurement the study needs next, if any."""
        from rknas.storage.queries import enqueue_repeat, lean_complete, race_step

        space, study = self._rk_space, self._ot_study
        assert study is not None
        if self._rk_complete is None:
            self._rk_complete = lean_complete(study)  # kept: each step then reads only the trials new since the last
        reported, repeat = race_step(study, space.racing, self._rk_complete)
        if self._rk_events is not None and len(space.metrics) == 1:
            best = reported[0]
            self._rk_events.incumbent(number=best.numbers[0], value=best.mean, runs=best.runs)
        if repeat is not None:
            enqueue_repeat(study, repeat)
            if self._rk_events is not None:
                self._rk_events.trial_repeat(number=repeat.last, repeat_of=repeat.attrs["repeat_of"],
                                             repeat=repeat.attrs["repeat"])

    def unfinished(self) -> list[int]:
        """Optuna ids of the trials this searcher asked for and has not told yet."""
        return [ot._trial_id for tid, ot in self._ot_trials.items()
                if tid not in self._completed_trials or tid in self._pending_errors]


def error_line(error_file: Optional[str]) -> str:
    """The most telling line of the error Tune saved for a trial."""
    try:
        text = open(error_file).read() if error_file else ""
    except OSError:
        text = ""
    return worker_death_reason(text)


class TrialEvents(Callback):
    """Forwards trial starts and results to the progress sink, and worker deaths' reasons to the searcher."""

    def __init__(self, events: Union[SearchEvents, EventSink, None], searcher: StudySearch):
        self.events: Optional[SearchEvents] = search_listener(events)
        self.searcher = searcher

    def __getstate__(self) -> dict[str, Any]:
        return {"events": None, "searcher": None}  # live objects of this process (see the module docstring)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.events is not None:
            self.events.trial_start(trial_id=trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.events is not None:
            self.events.trial_result(trial_id=trial.trial_id, result=result)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.note_retry(trial.trial_id, error_line(trial.error_file))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.record_error(trial.trial_id, error_line(trial.error_file))


class RepeatAwareASHA(ASHAScheduler):
    """Ray's ASHA, leaving rknas's re-measurements (racing) alone: they run to the last epoch.

    A repeat exists to give a full-fidelity value, so its results never reach the scheduler,
    nor its rungs (``rknas.storage.racing``).
    """

    @staticmethod
    def is_repeat(trial: Any) -> bool:
        return bool((getattr(trial, "config", None) or {}).get(REPEAT_CONFIG_KEY))

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not self.is_repeat(trial):
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self.is_repeat(trial):
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if not self.is_repeat(trial):
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if not self.is_repeat(trial):
            super().on_trial_remove(tune_controller, trial)
