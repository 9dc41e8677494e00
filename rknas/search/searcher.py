"""The Tune <-> Optuna adapter: Optuna proposes, Tune runs, the study records.

``trial_state`` is the one place that decides how a finished trial is recorded; the
adapter (``StudySearch``, built on Ray's ``OptunaSearch``) only collects what it needs and
calls it. Ray is imported when the adapter is built, not when this module is imported.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable, Mapping, Optional, Union

from optuna.trial import TrialState

from rknas.errors import ConfigError
from rknas.search.space import SearchSpace
from rknas.storage.record import TrialRecord

WORKER_CRASHED = "the trial's worker crashed (see the Ray logs)"

Values = Union[float, list[float], None]


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
        ``pruned_at_epoch``).
    """
    epochs = int(result.get("epoch", 0) or 0)
    if error or result.get("failed"):
        return TrialState.FAIL, None, {"fail_reason": result.get("error") or WORKER_CRASHED}
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
                     rk_events: Optional[Callable[[str, dict], None]] = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self._rk_space = rk_space
            self._rk_versions = rk_versions
            self._rk_history: dict[str, list[float]] = defaultdict(list)
            self._rk_events = rk_events
            self._rk_configs: dict[str, dict] = {}
            self._pending_errors: dict[str, tuple[Any, TrialRecord]] = {}

        def suggest(self, trial_id: str) -> Optional[dict]:
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
                self._ot_trials[trial_id].report(result["val_accuracy"], int(result["epoch"]))

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
                    ot.report(result["val_accuracy"], epoch)
            params = self._rk_configs.pop(trial_id, None) or {**ot.params, **(result.get("config") or {})}
            record = TrialRecord(val_accuracy_per_epoch=history, seed=params.get("seed"))
            for key in ("params", "flops", "wall_time", "val_loss", "train_loss"):
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
                    ot.set_constraint(f"max_{key}", (result[key] - limit) / limit)
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
            for k, v in record.user_attrs().items():
                ot.set_user_attr(k, v)
            assert self._ot_study is not None  # OptunaSearch creates it before the first suggest
            self._ot_study.tell(ot, values, state=state)
            if self._rk_events:
                self._rk_events("trial_end", {"trial_id": trial_id, "number": ot.number, "state": state.name,
                                              "record": record, "values": values})

    return StudySearch


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
