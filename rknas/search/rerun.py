"""Retrain a recorded trial and compare its validation accuracy, epoch by epoch.

A trial stores its full network and training configs (the seed included), where it trained
(device, thread count) and its per-epoch validation accuracy; the study stores its space,
which rebuilds the same train/validation split. ``rerun_trial`` trains the configs again
through the same code as the search (``objective.train_trial``) and returns both curves.

Agreement is exact equality: an accuracy is a count of correct images over the same
validation set, so any numerical difference that matters shows up as a different count,
and a tolerance would only hide it. On the CPU, with the recorded thread count and the same
torch build, the curves are equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import optuna
import torch
from optuna.trial import TrialState
from pydantic import ValidationError

from rknas.config import format_validation_error
from rknas.errors import ConfigError, RknasError
from rknas.search.objective import StopTrial, train_trial
from rknas.search.outcome import EpochResult, failure_reason
from rknas.search.runner import load_data
from rknas.search.space import SearchSpace
from rknas.storage.record import StudyRecord, TrialRecord
from rknas.util import default_device, torch_threads, usable_device


@dataclass
class RerunResult:
    """A recorded trial next to its reproduction.

    Attributes:
        study: The study's name.
        trial: The trial number.
        state: The trial's recorded state (COMPLETE or PRUNED).
        seed: The seed it trained with.
        device: Where the reproduction trained.
        threads: torch's intra-op threads of the reproduction.
        recorded: Validation accuracy per epoch, as recorded.
        reproduced: Validation accuracy per epoch, retrained (as many epochs as recorded).
        recorded_diverged: The recorded divergence message, if the trial diverged.
        reproduced_diverged: The reproduction's divergence message, if it diverged.
        recorded_val_loss: The recorded validation loss after the last trained epoch.
        reproduced_val_loss: The same, reproduced: a finer check than accuracy (any change in
            the arithmetic shows in it), reported but not part of ``agree``.
        notes: Why exact agreement may not be expected (another device, unrecorded threads).
    """

    study: str
    trial: int
    state: str
    seed: int
    device: str
    threads: int
    recorded: list[float]
    reproduced: list[float]
    recorded_diverged: Optional[str] = None
    reproduced_diverged: Optional[str] = None
    recorded_val_loss: Optional[float] = None
    reproduced_val_loss: Optional[float] = None
    notes: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        """Every epoch's accuracy is exactly the recorded one, and both diverged or neither."""
        return self.recorded == self.reproduced and bool(self.recorded_diverged) == bool(self.reproduced_diverged)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain values.

        Returns:
            The fields and ``agree``, ready for JSON.
        """
        return {**asdict(self), "agree": self.agree}


def rerunnable_trial(study: optuna.Study, number: int) -> tuple[optuna.trial.FrozenTrial, TrialRecord]:
    """The trial ``number`` of ``study`` and its record, if it can be retrained.

    Raises:
        RknasError: No such trial; a trial that is not COMPLETE or PRUNED with trained
            epochs; or one without its recorded configs and seed.
    """
    trials = study.get_trials(deepcopy=False)
    found = [t for t in trials if t.number == number]
    if not found:
        span = f"trials 0..{len(trials) - 1}" if trials else "no trials"
        raise RknasError(f"study {study.study_name!r} has no trial {number} ({span})")
    t = found[0]
    record = TrialRecord.of(t)
    if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or not record.val_accuracy_per_epoch:
        why = record.fail_reason or record.constraint_violation or "no epoch was trained"
        raise RknasError(
            f"trial {number} of study {study.study_name!r} is {t.state.name} ({why}); only COMPLETE trials and "
            "PRUNED trials with trained epochs can be rerun"
        )
    if record.network is None or record.training is None or record.seed is None:
        raise RknasError(f"trial {number} of study {study.study_name!r} has no recorded network/training config or seed")
    return t, record


def rerun_trial(
    study: optuna.Study,
    number: int,
    *,
    device: Optional[str] = None,
    data_root: Optional[str] = None,
    on_epoch: Optional[Callable[[EpochResult], None]] = None,
) -> RerunResult:
    """Retrain a recorded trial from its stored configs and seed, on the study's split.

    Args:
        study: A study written by ``rknas search``.
        number: The trial number.
        device: Where to train (default: the recorded device if it is available here, else
            the CPU).
        data_root: Where the data set's files are (overrides the recorded space's root).
        on_epoch: Called with each reproduced ``EpochResult`` (progress displays).

    Returns:
        Both curves; ``agree`` says whether they are equal.

    Raises:
        RknasError: The trial cannot be rerun (see ``rerunnable_trial``), the study has no
            recorded space, the data cannot be loaded, or the retraining failed with an error.
    """
    if device is not None:
        usable_device(device)  # before the data is loaded
    t, record = rerunnable_trial(study, number)
    info = StudyRecord.of(study)
    if info.space is None:
        raise RknasError(f"study {study.study_name!r} has no recorded search space (was it written by `rknas search`?)")
    try:
        space = SearchSpace.model_validate(info.space)
        net_cls, train_cls = space.config_classes
        network = net_cls.model_validate(record.network)
        training = train_cls.model_validate(record.training)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"trial {number} of study {study.study_name!r}")) from None
    if data_root:
        space.data.root = data_root
    train, val = load_data(space)

    notes: list[str] = []
    recorded_device = record.device or "cpu"
    if device is None:
        device = recorded_device if default_device() == "cuda" else "cpu"
    if torch.device(device).type != recorded_device:
        notes.append(f"the trial trained on {recorded_device}, the rerun on {device}: exact agreement is not expected")
    threads = record.threads or torch.get_num_threads()
    if record.threads is None:
        notes.append(f"the trial's thread count was not recorded; rerun with {threads} (CPU sums depend on it)")

    epochs = len(record.val_accuracy_per_epoch)
    reports: list[EpochResult] = []

    def report(result: EpochResult) -> None:
        reports.append(result)
        if on_epoch is not None:
            on_epoch(result)
        if int(result.get("epoch", 0)) >= epochs and not result.get("diverged"):
            raise StopTrial  # a PRUNED trial: as many epochs as it trained, on its own schedule

    with torch_threads(threads):
        try:
            train_trial(network, training, space, train, val, report, device=device)
        except StopTrial:
            pass
    last = reports[-1] if reports else {}
    why = failure_reason(last)
    if why is not None:
        raise RknasError(f"trial {number} of study {study.study_name!r} could not be retrained: {why}")
    reproduced = [float(r["val_accuracy"]) for r in reports if int(r.get("epoch", 0)) >= 1]
    return RerunResult(
        study=study.study_name, trial=number, state=t.state.name, seed=int(record.seed or 0), device=str(device),
        threads=threads, recorded=[float(v) for v in record.val_accuracy_per_epoch], reproduced=reproduced,
        recorded_diverged=record.diverged, reproduced_diverged=last.get("diverged"),
        recorded_val_loss=record.val_loss, reproduced_val_loss=last.get("val_loss"), notes=notes,
    )
