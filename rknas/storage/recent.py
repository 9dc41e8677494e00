"""A driver's cache of its study that keeps the recent trials only (``sampler_window``).

Optuna wraps a database storage in a cache that keeps every trial it has read, for the life
of the process: a driver that samples, asks and tells reads every new trial, so its memory grew
by about 33 KB per trial of the study (330 MB at 10,000 trials; benchmarks/RESULTS.md). A
driver whose sampler sees only the latest ``sampler_window`` finished trials has no use for the
others. ``RecentTrialsCache`` is Optuna's cache that starts at the window (its first read skips
the older finished trials) and drops the finished trials that fall out of it as new ones
finish; unfinished trials (running, waiting) always stay, as Optuna's constant liar and
``ask()`` read them. What it does not hold, ``get_trial`` reads from the database.
"""

from __future__ import annotations

from typing import Any

from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage, _StudyInfo
from optuna.trial import TrialState

from rknas.storage.bulk import FINISHED, _run


class RecentTrialsCache(_CachedStorage):
    """Optuna's trial cache over ``backend``, holding the unfinished trials and the latest finished ones.

    ``get_all_trials`` answers every unfinished trial and at least the latest ``keep`` finished
    ones (by trial number, which is creation order), up to ``2 * keep`` between evictions: what
    a sampler with ``sampler_window: keep`` reads, and nothing that counts the whole study
    (use ``rknas.storage.bulk`` for that).

    Args:
        backend: The study's database storage.
        keep: How many of the latest finished trials to keep (at least 1).
    """

    def __init__(self, backend: RDBStorage, keep: int):
        super().__init__(backend)
        self.keep = max(1, int(keep))
        self._started: set[int] = set()

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        if study_id not in self._started:  # the first read starts at the window, not at trial 0
            first, unfinished = _window_start(self._backend, study_id, self.keep)
            with self._lock:  # Optuna's lock is not reentrant: never held around its own methods
                if study_id not in self._started:
                    self._started.add(study_id)
                    info = self._studies.setdefault(study_id, _StudyInfo())
                    info.last_finished_trial_id = max(info.last_finished_trial_id, first - 1)
                    info.unfinished_trial_ids |= unfinished
        super()._read_trials_from_remote_storage(study_id)
        with self._lock:
            self._evict(study_id)

    def _evict(self, study_id: int) -> None:
        """Drop the finished trials older than the latest ``keep`` once twice as many are held."""
        info = self._studies[study_id]
        finished = sorted(n for n, t in info.trials.items() if t.state.is_finished())
        if len(finished) <= 2 * self.keep:
            return
        cutoff = finished[-self.keep]
        for number in finished:
            if number >= cutoff:
                break
            trial = info.trials.pop(number)
            self._trial_id_to_study_id_and_number.pop(trial._trial_id, None)
            self._study_id_and_number_to_trial_id.pop((study_id, number), None)

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state["_started"] = set()
        return state


def _window_start(storage: RDBStorage, study_id: int, keep: int) -> tuple[int, set[int]]:
    """The id of the ``keep``-th latest finished trial (0: fewer finished), and the unfinished trials before it."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    of_study = trials.c.study_id == study_id

    def read() -> tuple[int, set[int]]:
        with storage.engine.connect() as conn:
            first = conn.execute(
                sa.select(trials.c.trial_id).where(of_study, trials.c.state.in_(FINISHED))
                .order_by(trials.c.trial_id.desc()).limit(1).offset(keep - 1)
            ).scalar()
            if first is None:
                return 0, set()
            older = conn.execute(
                sa.select(trials.c.trial_id).where(
                    of_study, trials.c.trial_id < first, trials.c.state.in_((TrialState.RUNNING, TrialState.WAITING)))
            ).scalars()
            return int(first), {int(i) for i in older}

    return _run(storage, read)
