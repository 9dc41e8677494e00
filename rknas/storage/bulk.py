"""Whole-study reads that stay fast at ten thousand trials.

Optuna's ``study.get_trials()`` on a database builds an ORM object for every row of every
trial (parameters, values, attributes, intermediate values) and, behind Optuna's cache, runs
again for every caller. On a PostgreSQL study of 7,980 trials that made ``rknas studies`` take
15 s and a driver spend a sixth of its time counting the study before each trial
(benchmarks/RESULTS.md, "A study of thousands of trials"). The questions rknas asks of a whole
study are narrower: how many trials in each state, which ones completed with which values,
and then a few whole trials. They are answered here with plain SELECTs on Optuna's own tables
(through its SQLAlchemy models, so its schema stays the one definition), inside the storage's
retries; a study that is not in a database (an in-memory study in a notebook or a test) is
answered from ``study.get_trials()``.
"""

from __future__ import annotations

import datetime
import json
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from typing import Any, Optional, TypeVar

import optuna
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from rknas.storage.record import TrialRecord

T = TypeVar("T")

INTERRUPTED = "INTERRUPTED"  # a FAIL trial that a stopped search left unfinished (TrialRecord.interrupted)
# The user attribute TrialRecord.interrupted is stored under (record.py is the one place keys are spelled).
(_INTERRUPTED_KEY,) = set(TrialRecord(interrupted=True).user_attrs()) - set(TrialRecord().user_attrs())
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def rdb_of(study: optuna.Study) -> Optional[RDBStorage]:
    """The database behind a study (under Optuna's cache), or None for other storages."""
    storage = study._storage
    storage = getattr(storage, "_backend", storage)  # optuna.storages._CachedStorage
    return storage if isinstance(storage, RDBStorage) else None


def _run(storage: RDBStorage, call: Callable[[], T]) -> T:
    retrying = getattr(storage, "retrying", None)  # rknas.storage.retry.RetryingRDBStorage
    return retrying(call) if retrying is not None else call()


def tally(study: optuna.Study) -> dict[str, int]:
    """How many trials the study holds in each state.

    Args:
        study: The study.

    Returns:
        State name -> count, for the states that occur; interrupted FAIL trials are counted
        under ``"INTERRUPTED"``, not ``"FAIL"``.
    """
    storage = rdb_of(study)
    if storage is None:
        counts: dict[str, int] = defaultdict(int)
        for t in study.get_trials(deepcopy=False):
            counts[INTERRUPTED if t.state == TrialState.FAIL and TrialRecord.of(t).interrupted else t.state.name] += 1
        return dict(counts)

    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trials, attrs = models.TrialModel.__table__, models.TrialUserAttributeModel.__table__
    marked = sa.and_(attrs.c.trial_id == trials.c.trial_id, attrs.c.key == _INTERRUPTED_KEY)
    query = (
        sa.select(trials.c.state, attrs.c.value_json, sa.func.count())
        .select_from(trials.outerjoin(attrs, marked))
        .where(trials.c.study_id == study._study_id)
        .group_by(trials.c.state, attrs.c.value_json)
    )

    def read() -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        with storage.engine.connect() as conn:
            for state, flag, n in conn.execute(query).all():
                interrupted = state == TrialState.FAIL and flag is not None and json.loads(flag)
                counts[INTERRUPTED if interrupted else state.name] += n
        return dict(counts)

    return _run(storage, read)


def _frozen(rows: Any, values: dict, params: dict, user: dict, system: dict, steps: dict) -> list[FrozenTrial]:
    """``FrozenTrial``s of the rows ``load_trials`` read, each distribution parsed once."""
    dists: dict[str, BaseDistribution] = {}  # the same few distributions, parsed once

    def dist_of(text: str) -> BaseDistribution:
        if text not in dists:
            dists[text] = json_to_distribution(text)
        return dists[text]

    local = _local if (time.timezone, time.altzone) != (0, 0) else _same  # a server in UTC: nothing to convert
    trials = []
    for tid, number, state, start, complete in rows:
        ps = sorted(params.get(tid, ()))
        by_objective = values.get(tid)
        trials.append(FrozenTrial(
            number=number, state=state, value=None,
            values=[by_objective[i] for i in sorted(by_objective)] if by_objective else None,
            datetime_start=local(start), datetime_complete=local(complete),
            params={name: dist_of(dist).to_external_repr(value) for _, name, value, dist in ps},
            distributions={name: dist_of(dist) for _, name, _, dist in ps},
            user_attrs=user.get(tid, {}), system_attrs=system.get(tid, {}),
            intermediate_values=steps.get(tid, {}), trial_id=tid,
        ))
    return trials


def counted(study: optuna.Study) -> tuple[int, int]:
    """The trials that count towards ``--trials``, and the RUNNING ones.

    Args:
        study: The study.

    Returns:
        ``(finished, running)``: COMPLETE, PRUNED and FAIL trials except interrupted ones,
        and RUNNING trials.
    """
    counts = tally(study)
    return sum(counts.get(s.name, 0) for s in FINISHED), counts.get(TrialState.RUNNING.name, 0)


def _same(utc: Optional[datetime.datetime]) -> Optional[datetime.datetime]:
    return utc


def _local(utc: Optional[datetime.datetime]) -> Optional[datetime.datetime]:
    """Optuna stores naive UTC and hands out naive local time (as its ORM models do)."""
    return None if utc is None else utc.replace(tzinfo=datetime.UTC).astimezone().replace(tzinfo=None)


def load_trials(
    study: optuna.Study,
    states: Optional[Collection[TrialState]] = None,
    trial_ids: Optional[Iterable[int]] = None,
    user_keys: Optional[Collection[str]] = None,
    params: bool = True,
    from_trial_id: int = 0,
) -> list[FrozenTrial]:
    """A study's trials, as ``study.get_trials(deepcopy=False, states=...)`` returns them.

    One SELECT per table instead of an ORM object per row: the same trials, several times
    faster on a large study.

    Args:
        study: The study.
        states: Only trials in these states (default: all).
        trial_ids: Only these trials (Optuna's trial ids).
        user_keys: A lean read: only these user attributes, and no system attributes or
            intermediate values (a plot of ten thousand trials needs two of a record's fields,
            and decoding the rest is most of the read).
        params: False: no parameters either (empty ``params`` and ``distributions``), for a
            reader of values and records only. SQL storages only.
        from_trial_id: Only trials with at least this Optuna trial id (``IncrementalComplete``).

    Returns:
        The trials, in the order they were created.
    """
    storage = rdb_of(study)
    wanted = None if trial_ids is None else set(trial_ids)
    if storage is None:  # not a database: Optuna's own read (user_keys is a saving only in SQL)
        found = study.get_trials(deepcopy=False, states=tuple(states) if states is not None else None)
        return [t for t in found if (wanted is None or t._trial_id in wanted) and t._trial_id >= from_trial_id]
    if wanted is not None and not wanted:
        return []

    import sqlalchemy as sa
    from optuna.storages._rdb import models

    tt = models.TrialModel.__table__
    where = [tt.c.study_id == study._study_id]
    if states is not None:
        where.append(tt.c.state.in_(list(states)))
    if wanted is not None:  # ids written into the SQL: no bound-parameter limit (999 in SQLite before 3.32)
        where.append(tt.c.trial_id.in_(sa.bindparam("wanted", sorted(wanted), expanding=True, literal_execute=True)))
    if from_trial_id:
        where.append(tt.c.trial_id >= from_trial_id)
    ids = sa.select(tt.c.trial_id).where(*where).scalar_subquery()

    def children(model: Any, *columns: str) -> Any:
        table = model.__table__
        return sa.select(table.c.trial_id, *(table.c[c] for c in columns)).where(table.c.trial_id.in_(ids))

    def read() -> list[FrozenTrial]:
        with storage.engine.connect() as conn:
            rows = conn.execute(
                sa.select(tt.c.trial_id, tt.c.number, tt.c.state, tt.c.datetime_start, tt.c.datetime_complete)
                .where(*where).order_by(tt.c.trial_id)
            ).all()
            values: dict[int, dict[int, float]] = defaultdict(dict)
            for tid, objective, value, kind in conn.execute(
                children(models.TrialValueModel, "objective", "value", "value_type")
            ).all():
                values[tid][objective] = models.TrialValueModel.stored_repr_to_value(value, kind)
            by_trial: dict[int, list[tuple[int, str, float, str]]] = defaultdict(list)
            for tid, pid, name, value, dist in conn.execute(
                children(models.TrialParamModel, "param_id", "param_name", "param_value", "distribution_json")
            ).all() if params else ():
                by_trial[tid].append((pid, name, value, dist))
            user: dict[int, dict[str, Any]] = defaultdict(dict)
            ua = models.TrialUserAttributeModel.__table__
            query = children(models.TrialUserAttributeModel, "key", "value_json")
            if user_keys is not None:
                query = query.where(ua.c.key.in_(list(user_keys)))
            for tid, key, value in conn.execute(query).all():
                user[tid][key] = json.loads(value)
            system: dict[int, dict[str, Any]] = defaultdict(dict)
            steps: dict[int, dict[int, float]] = defaultdict(dict)
            if user_keys is None:
                for tid, key, value in conn.execute(children(models.TrialSystemAttributeModel, "key", "value_json")).all():
                    system[tid][key] = json.loads(value)
                for tid, step, value, kind in conn.execute(
                    children(models.TrialIntermediateValueModel, "step", "intermediate_value", "intermediate_value_type")
                ).all():
                    steps[tid][step] = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value(value, kind)

        return _frozen(rows, values, by_trial, user, system, steps)

    return _run(storage, read)


def pareto_front(trials: list[FrozenTrial], directions: list[optuna.study.StudyDirection]) -> list[FrozenTrial]:
    """The trials no other trial dominates (what ``study.best_trials`` answers, without reading the study again).

    Args:
        trials: Completed trials, each with one value per direction.
        directions: The study's directions.

    Returns:
        The non-dominated trials, in their given order; trials with equal values are all kept.
    """
    import numpy as np

    if not trials:
        return []
    signs = np.array([1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in directions])
    v = np.array([t.values for t in trials], dtype=float) * signs  # every objective maximised
    order = np.lexsort(tuple(-v[:, j] for j in reversed(range(v.shape[1]))))  # best first on objective 0
    kept: list[int] = []
    for i in order:  # a trial can only be dominated by one sorted before it, and then by a kept one
        front = v[kept]
        if not kept or not np.any(np.all(front >= v[i], axis=1) & np.any(front > v[i], axis=1)):
            kept.append(int(i))
    return [trials[i] for i in sorted(kept)]


class IncrementalComplete:
    """A study's complete trials, each read once: a driver that asks after every trial (racing)
    reads only what may have completed since it last asked, not ten thousand trials each time.

    Every trial below the lowest id that was unfinished (waiting or running) at the last read
    had finished by then, and a finished trial's state never changes; so each read covers the
    trials from that id on. The floor is found before the read, so nothing that completes
    between the two is missed.

    Args:
        study: The study.
        user_keys: The user attributes to read (a lean read; None: all).
    """

    def __init__(self, study: optuna.Study, user_keys: Optional[Collection[str]] = None):
        self.study, self.user_keys = study, user_keys
        self._trials: dict[int, FrozenTrial] = {}
        self._floor = 0

    def trials(self) -> list[FrozenTrial]:
        """The complete trials now, in the order they were created."""
        floor = self._next_floor()
        for t in load_trials(self.study, states=(TrialState.COMPLETE,), user_keys=self.user_keys,
                             from_trial_id=self._floor):
            self._trials[t._trial_id] = t
        self._floor = floor
        return [self._trials[i] for i in sorted(self._trials)]

    def _next_floor(self) -> int:
        storage = rdb_of(self.study)
        if storage is None:  # Optuna's own storages: read everything each time
            return 0
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        tt = models.TrialModel.__table__
        mine = tt.c.study_id == self.study._study_id
        unfinished = sa.select(sa.func.min(tt.c.trial_id)).where(
            mine, tt.c.state.in_([TrialState.WAITING, TrialState.RUNNING]))
        last = sa.select(sa.func.max(tt.c.trial_id)).where(mine)

        def read() -> int:
            # Two statements see the study at two moments: the highest id first, so that a trial
            # created between them (unfinished, above that id) is never passed over.
            with storage.engine.connect() as conn:
                top = conn.execute(last).scalar()
                low = conn.execute(unfinished).scalar()
            above = 0 if top is None else int(top) + 1
            return above if low is None else min(int(low), above)

        return _run(storage, read)
