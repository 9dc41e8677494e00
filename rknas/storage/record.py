"""What a study and each of its trials store, as one typed definition.

Optuna keeps free-form user attributes per study and per trial; these dataclasses are the
only place their keys are spelled. The search writes them, and ``storage``, ``report`` and
the CLI read them back through ``TrialRecord.of(trial)`` / ``StudyRecord.of(study)``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Optional


def _to_attrs(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(obj).items() if v is not None and v is not False}


@functools.cache
def _field_names(cls: Any) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _from_attrs(cls: Any, attrs: dict[str, Any]) -> Any:
    names = _field_names(cls)  # once per class: a report reads ten thousand records
    return cls(**{k: v for k, v in attrs.items() if k in names})


@dataclass
class TrialRecord:
    """Everything rknas stores with one trial, besides Optuna's params, values and state.

    Attributes:
        val_accuracy_per_epoch: Validation accuracy after each trained epoch.
        seed: The seed the trial trained with; with ``network``/``training`` it reproduces it.
        params: Parameter count of the network.
        flops: FLOPs of one forward pass (the paper's convention).
        wall_time: Seconds from the trial's start to its last epoch.
        val_loss: Validation loss after the last epoch.
        train_loss: Training loss of the last epoch.
        network: The full ``NetworkConfig`` as JSON.
        training: The full ``TrainConfig`` as JSON.
        strategy_versions: Strategy name -> "package version" that provided it.
        fail_reason: Why a FAIL trial failed.
        constraint_violation: Why a trial over a size limit was PRUNED untrained.
        pruned_at_epoch: The epoch at which early stopping stopped the trial.
        diverged: Why a PRUNED trial stopped with a non-finite loss (train.fit's message).
        device: Where the trial trained ("cpu", "cuda"); with ``threads``, what reproduces it.
        threads: torch's intra-op threads during the trial (CPU sums depend on it).
        gpu_memory_mib: Peak GPU memory the trial allocated (CUDA only; trials may share a GPU).
        table_run: In a table-backed search (``rknas search --table``), the table run that
            answered the trial (``"<table file> arch N run R"``); nothing was trained.
        driver: The ``rknas search`` process that ran the trial (``host:pid:random``);
            written when the trial starts, so a RUNNING trial names its owner.
        space_revision: The study's space revision the trial was sampled from (0: the space
            the study was started with; see ``StudyRecord.revisions``).
        interrupted: The search stopped before the trial finished (it does not count).
        attempts: How many times the trial ran: more than 1 when its worker died (killed,
            out of memory, node lost) and it ran again from its last finished epoch.
        retry_reasons: Why each earlier attempt ended (the worker's death, from Ray).
        repeat_of: With racing (``rknas.storage.racing``), the number of the configuration's
            first trial: this trial re-measures that configuration on its own seed.
        repeat: Which re-measurement this is (1: the configuration's second run).
    """

    val_accuracy_per_epoch: list[float] = field(default_factory=list)
    seed: Optional[int] = None
    params: Optional[int] = None
    flops: Optional[int] = None
    wall_time: Optional[float] = None
    val_loss: Optional[float] = None
    train_loss: Optional[float] = None
    network: Optional[dict[str, Any]] = None
    training: Optional[dict[str, Any]] = None
    strategy_versions: Optional[dict[str, str]] = None
    fail_reason: Optional[str] = None
    constraint_violation: Optional[str] = None
    pruned_at_epoch: Optional[int] = None
    diverged: Optional[str] = None
    device: Optional[str] = None
    threads: Optional[int] = None
    gpu_memory_mib: Optional[float] = None
    table_run: Optional[str] = None
    driver: Optional[str] = None
    space_revision: Optional[int] = None
    interrupted: bool = False
    attempts: Optional[int] = None
    retry_reasons: Optional[list[str]] = None
    repeat_of: Optional[int] = None
    repeat: Optional[int] = None

    def user_attrs(self) -> dict[str, Any]:
        """The non-empty fields, as Optuna user attributes.

        Returns:
            ``{field: value}`` for every field that is set (not None, not False).
        """
        return _to_attrs(self)

    @classmethod
    def from_user_attrs(cls, attrs: dict[str, Any]) -> TrialRecord:
        """Read a record back; unknown keys (written by other tools) are ignored."""
        return _from_attrs(cls, attrs)

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        """The record of an Optuna ``FrozenTrial``."""
        return cls.from_user_attrs(trial.user_attrs)

    @property
    def last_val_accuracy(self) -> Optional[float]:
        """Validation accuracy after the last trained epoch, if any epoch was trained."""
        return self.val_accuracy_per_epoch[-1] if self.val_accuracy_per_epoch else None


def thoroughness(evaluation: dict[str, Any]) -> tuple:
    """How much an evaluation measured: seeds per model, then epochs per run, then how recent."""
    return len(evaluation.get("seeds") or []), int(evaluation.get("epochs") or 0), str(evaluation.get("evaluated_at") or "")


@dataclass
class StudyRecord:
    """What rknas stores with a study when it creates it.

    Attributes:
        space_name: The search space's name.
        space: The whole validated space as JSON (what a trial means), with the command's
            overrides (``--epochs``, ``--no-early-stopping``, ``--data-root``) applied: the
            space the study was started with.
        metrics: The objectives' metric names, in the study's direction order.
        seed: The search's base seed (trial seeds are ``seed + trial number``).
        revisions: Changes a later ``rknas search --allow-changes`` made, in order; each is
            ``{"revision": n, "space": ..., "seed": ..., "changes": {key: [before, after]},
            "first_trial": the first trial number sampled under it, "at": ISO time, "rknas_version"}``.
            Trials record the revision they were sampled from (``TrialRecord.space_revision``).
        rknas_version: The version that created the study.
        evaluation: The one ``rknas evaluate`` summary studies kept before ``evaluations``
            (read, never written now).
        evaluations: Every ``rknas evaluate`` summary, oldest first, one per output folder:
            epochs, seeds, recipe trial, data, folder, time, and per model its name, source
            (trial number), params, FLOPs, test accuracy per seed, mean and std
            (``rknas.evaluate.Evaluation.summary``). ``chosen_evaluation`` picks one.
        importances: Which parameters mattered, kept by a search's end or a report once the
            study is large: ``{"complete": completed trials they were computed from, "method",
            "values": {parameter: importance}, "at"}`` (``rknas.importance.kept_importances``).
    """

    space_name: Optional[str] = None
    space: Optional[dict[str, Any]] = None
    metrics: Optional[list[str]] = None
    seed: Optional[int] = None
    rknas_version: Optional[str] = None
    evaluation: Optional[dict[str, Any]] = None
    revisions: Optional[list[dict[str, Any]]] = None
    evaluations: Optional[list[dict[str, Any]]] = None
    importances: Optional[dict[str, Any]] = None

    def user_attrs(self) -> dict[str, Any]:
        """The non-empty fields, as Optuna user attributes.

        Returns:
            ``{field: value}`` for every field that is set (not None, not False).
        """
        return _to_attrs(self)

    @property
    def revision(self) -> int:
        """The current space revision (0: no change since the study was started)."""
        return len(self.revisions or [])

    def space_at(self, revision: Optional[int] = None) -> Optional[dict[str, Any]]:
        """The space a trial of a revision was sampled from.

        Args:
            revision: A space revision (``TrialRecord.space_revision``; default: the current one).

        Returns:
            The space as JSON; None if the study recorded none.
        """
        revision = self.revision if revision is None else revision
        if revision <= 0 or not self.revisions:
            return self.space
        return self.revisions[min(revision, len(self.revisions)) - 1].get("space", self.space)

    def seed_at(self, revision: Optional[int] = None) -> Optional[int]:
        """The base seed of a revision.

        Args:
            revision: A space revision (default: the current one).

        Returns:
            The seed; None if the study recorded none.
        """
        revision = self.revision if revision is None else revision
        if revision <= 0 or not self.revisions:
            return self.seed
        return self.revisions[min(revision, len(self.revisions)) - 1].get("seed", self.seed)

    def all_evaluations(self) -> list[dict[str, Any]]:
        """Every evaluation of the study.

        Returns:
            The summaries, oldest first (a study from before they were kept: its one evaluation).
        """
        return list(self.evaluations or ([self.evaluation] if self.evaluation else []))

    def chosen_evaluation(self, number: Optional[int] = None) -> Optional[dict[str, Any]]:
        """The evaluation that ``best --by evaluation`` and ``report`` use.

        Args:
            number: An evaluation's number (1 = the oldest, as ``rknas report`` lists them);
                None: the most thorough (most seeds, then most epochs, then the latest).

        Returns:
            The summary, or None when the study has no evaluation.

        Raises:
            IndexError: No evaluation has that number.
        """
        kept = self.all_evaluations()
        if number is not None:
            if not 1 <= number <= len(kept):
                raise IndexError(number)
            return kept[number - 1]
        return max(kept, key=thoroughness, default=None)

    @classmethod
    def of(cls, study: Any) -> StudyRecord:
        """The record of an Optuna ``Study``."""
        return _from_attrs(cls, study.user_attrs)
