"""Continuing a study safely: what a trial means may not change silently, and ASHA remembers.

A study records the space it was started with (``StudyRecord.space``, the command's
overrides applied) and the base seed. ``plan_resume`` compares them with what a new command
asks for: a difference is refused (one line naming it) unless the command allows it, and
then becomes a new space revision that the following trials record. ``seed_rungs`` gives a
fresh ASHA scheduler the study's earlier learning curves, so new trials are judged against
the earlier ones instead of against an empty rung.
"""

from __future__ import annotations

import datetime
import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError

from rknas._version import __version__
from rknas.errors import ConfigError
from rknas.search.space import SearchSpace
from rknas.storage.bulk import load_trials, tally
from rknas.storage.queries import finished_trials
from rknas.storage.record import StudyRecord, TrialRecord
from rknas.util import differences as nested_differences
from rknas.util import flatten

# Keys that do not change what a trial means: names, where the data lives on this machine
# (drivers on several machines have different roots), what is read from the data, and the
# warm start (the designs a new study runs first; a study being continued runs none).
IGNORED = ("name", "description", "data.root", "classes", "in_channels", "image_size", "start_from")
ALLOW_FLAG = "--allow-changes"


def definition(space: dict[str, Any], seed: Optional[int]) -> dict[str, Any]:
    """What a trial means, flattened to dotted keys: the space (less ``IGNORED``) and the seed.

    Args:
        space: A space as JSON (``SearchSpace.model_dump(mode="json")``).
        seed: The base seed, or None when none is recorded (then it is not compared).

    Returns:
        ``{"fidelity.epochs": 3, "architecture.k": [8, 16], ..., "seed": 0}``.
    """
    flat = flatten(json.loads(json.dumps(space)))
    flat = {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in IGNORED)}
    if seed is not None:
        flat["seed"] = seed
    return flat


def recorded_definition(record: StudyRecord, schema: type[SearchSpace] = SearchSpace) -> Optional[dict[str, Any]]:
    """The definition of a study's current revision.

    The recorded space is read through today's schema first, so fields that a newer rknas
    added (with their defaults) are not taken for changes.

    Args:
        record: The study's record.
        schema: The space class to read the recorded space with.

    Returns:
        The definition (see ``definition``), or None if the study recorded no space.
    """
    space = record.space_at()
    if space is None:
        return None
    try:
        space = schema.model_validate(space).model_dump(mode="json")
    except ValidationError:
        pass  # recorded by a version whose schema differs: compare what is there
    return definition(space, record.seed_at())


def differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Compare two definitions.

    Args:
        before: The study's definition (without ``seed`` when it recorded none: then the seed
            is not compared).
        after: The command's definition.

    Returns:
        ``{key: (before, after)}`` for every key whose value differs; a missing key reads ``(unset)``.
    """
    if "seed" not in before:
        after = {k: v for k, v in after.items() if k != "seed"}
    return nested_differences(before, after)


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class ResumePlan:
    """What a run records about its space.

    Attributes:
        revision: The space revision this run's trials record.
        record_start: The study has no recorded space yet: record this run's as the original.
        new_revision: A revision to append to ``StudyRecord.revisions`` (``--allow-changes``).
        changes: ``{key: (before, after)}`` against the study's current revision.
    """

    revision: int = 0
    record_start: bool = True
    new_revision: Optional[dict[str, Any]] = None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def plan_resume(study_name: str, existing: Optional[optuna.Study], space: SearchSpace, seed: int,
                allow_changes: bool) -> ResumePlan:
    """Compare a command's space and seed with the study's; refuse a silent change.

    Args:
        study_name: The study's name (for the message).
        existing: The study, or None if the command creates it.
        space: The command's space, overrides applied (before the data fills it in).
        seed: The command's base seed.
        allow_changes: The command passed ``--allow-changes``.

    Returns:
        The plan: which revision the run's trials record, and what to write to the study.

    Raises:
        ConfigError: What a trial means would change and ``allow_changes`` is False; the
            message names every changed key with both values.
    """
    record = StudyRecord.of(existing) if existing is not None else None
    before = recorded_definition(record, type(space)) if record is not None else None
    if record is None or before is None:
        return ResumePlan()
    changes = differences(before, definition(space.model_dump(mode="json"), seed))
    if not changes:
        return ResumePlan(revision=record.revision, record_start=False)
    revision = record.revision + 1
    if not allow_changes:
        shown = list(changes.items())[:4]
        more = f" (and {len(changes) - 4} more)" if len(changes) > 4 else ""
        was = ", ".join(f"{k}={_show(a)}" for k, (a, _) in shown)
        now = ", ".join(f"{_show(b)}" if len(shown) == 1 else f"{k}={_show(b)}" for k, (_, b) in shown)
        where = "was started with" if record.revision == 0 else f"is at space revision {record.revision} with"
        raise ConfigError(
            f"study {study_name!r} {where} {was}{more}; this command asks {now}; nothing was run (repeat the study's "
            f"settings, use another --study, or pass {ALLOW_FLAG} to continue it as space revision {revision})"
        )
    new = {
        "revision": revision,
        "space": space.model_dump(mode="json"),
        "seed": seed,
        "changes": {k: [a, b] for k, (a, b) in changes.items()},
        "rknas_version": __version__,
    }
    return ResumePlan(revision=revision, record_start=False, new_revision=new, changes=changes)


def write_plan(study: optuna.Study, plan: ResumePlan, space: SearchSpace, seed: int) -> None:
    """Record the run's space in the study: the original one, or a new revision.

    Args:
        study: The study (created or loaded).
        plan: From ``plan_resume``.
        space: The run's space (filled from the data).
        seed: The run's base seed.
    """
    if plan.record_start and StudyRecord.of(study).space is None:
        record = StudyRecord(space_name=space.name, space=space.model_dump(mode="json"), metrics=space.metrics,
                             seed=seed, rknas_version=__version__)
        for key, value in record.user_attrs().items():
            study.set_user_attr(key, value)
    if plan.new_revision is not None:
        # enqueued trials run under the revision (read in SQL: a driver caches no whole study)
        waiting = [t.number for t in load_trials(study, states=(TrialState.WAITING,), user_keys=(), params=False)]
        revision = {**plan.new_revision, "space": space.model_dump(mode="json"),
                    "first_trial": min(waiting, default=sum(tally(study).values())),
                    "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
        revisions = list(StudyRecord.of(study).revisions or []) + [revision]
        for key, value in StudyRecord(revisions=revisions).user_attrs().items():
            study.set_user_attr(key, value)


def comparable_revisions(record: StudyRecord, space: SearchSpace) -> set[int]:
    """Revisions whose learning curves are comparable with this space's: same data, same epochs.

    A trial's schedule is scaled to its own epochs, so a curve at epoch 3 of 3 is not a curve
    at epoch 3 of 9; and accuracy on other data is not comparable at all.

    Args:
        record: The study's record.
        space: The run's space.

    Returns:
        The comparable revision numbers (0 included when the study recorded no space).
    """
    def key(s: Optional[dict[str, Any]]) -> Any:
        if s is None:
            return None
        data = {k: v for k, v in (s.get("data") or {}).items() if k != "root"}
        return json.dumps([data, (s.get("fidelity") or {}).get("epochs")], sort_keys=True)

    current = key(space.model_dump(mode="json"))
    out = {r for r in range(record.revision + 1) if key(record.space_at(r)) == current}
    if record.space is None:
        out.add(0)
    return out


def seed_rungs(scheduler: Any, study: optuna.Study, space: SearchSpace) -> int:
    """Give an ASHA scheduler the study's earlier per-epoch validation accuracy.

    Ray's ``AsyncHyperBandScheduler`` keeps its rungs in ``_brackets[i]._rungs``: a list of
    ``(milestone, {trial id: signed value})``. Each earlier finished trial (interrupted ones
    and incomparable revisions aside) is recorded at every rung its curve reached, under the
    key ``study-trial-<number>``. Other schedulers are left alone.

    Args:
        scheduler: A Tune scheduler.
        study: The study.
        space: The run's space (for the comparable revisions).

    Returns:
        How many trials were fed in.
    """
    brackets = getattr(scheduler, "_brackets", None)
    if not brackets:
        return 0
    sign = getattr(scheduler, "_metric_op", None) or 1.0
    comparable = comparable_revisions(StudyRecord.of(study), space)
    fed = 0
    # only what the rungs need: a driver reads this at every round, and whole trials of a large
    # study would take hundreds of MB for the moment
    needed = TrialRecord(val_accuracy_per_epoch=[], space_revision=0, repeat_of=0).user_attrs()
    for t in finished_trials(study, user_keys=tuple(needed), params=False):
        record = TrialRecord.of(t)
        curve = record.val_accuracy_per_epoch
        if not curve or (record.space_revision or 0) not in comparable or record.repeat_of is not None:
            continue  # (racing's repeats never reach ASHA's rungs: tune_adapter.RepeatAwareASHA)
        for bracket in brackets:
            for milestone, recorded in bracket._rungs:
                epoch = math.ceil(milestone)
                if epoch <= len(curve) and math.isfinite(curve[epoch - 1]):
                    recorded[f"study-trial-{t.number}"] = sign * float(curve[epoch - 1])
        fed += 1
    return fed
