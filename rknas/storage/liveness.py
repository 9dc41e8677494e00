"""Which RUNNING trials are alive: heartbeats, stale-trial recovery, and interrupting a trial.

Several ``rknas search`` processes ("drivers") may work on one study at once. Each driver
records a heartbeat for each trial it runs (``Heartbeats``: the first one as soon as the
trial is asked for, then every ``heartbeat_interval`` seconds, in a background thread),
through Optuna's ``RDBStorage(heartbeat_interval=..., grace_period=...)``. A RUNNING trial
whose heartbeat is older than the grace period belongs to a driver that died: any driver
recovers it (``recover_stale``) as FAIL with ``interrupted`` in its record, so it does not
count. A driver never touches another's live trial: at the end of a run it interrupts only
the trials it asked for itself (``interrupt_trials`` with their ids).

The heartbeat and "now" both come from the database's clock, so drivers on machines with
different clocks agree. A RUNNING trial without any heartbeat (left by a process that does
not record heartbeats, e.g. an older rknas that was killed) is given one by the first driver
that sees it: it then goes stale, and is recovered, unless its owner starts beating.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Optional, TypeVar

import optuna
from optuna.trial import TrialState

from rknas.storage.record import TrialRecord
from rknas.storage.retry import INTERRUPT_KEY, RetryingRDBStorage

T = TypeVar("T")

logger = logging.getLogger(__name__)

def driver_id() -> str:
    """A name for this process, unique among drivers.

    Returns:
        ``host:pid:random``; recorded with each trial the process runs (``TrialRecord.driver``).
    """
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def rdb_backend(storage: Any) -> Optional[optuna.storages.RDBStorage]:
    """The ``RDBStorage`` under a storage.

    Args:
        storage: An Optuna storage (Optuna wraps an ``RDBStorage`` in a cache).

    Returns:
        The ``RDBStorage``, or None for other storages.
    """
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def heartbeat_enabled(storage: Any) -> bool:
    """Whether a storage was opened with a heartbeat interval.

    Args:
        storage: An Optuna storage.

    Returns:
        True if it records heartbeats.
    """
    backend = rdb_backend(storage)
    return backend is not None and backend.get_heartbeat_interval() is not None


class Heartbeats:
    """Records a heartbeat for each trial this driver runs, from a daemon thread.

    ``add`` records the first heartbeat at once (a driver killed right after asking for a
    trial still leaves it recoverable) and ``remove`` stops beating for a told trial. An
    error while recording (a busy database) is logged and retried at the next beat.

    Pickles to an idle instance: Tune pickles its searcher, which holds this.
    """

    def __init__(self, storage: Any, interval: float):
        self._storage = storage
        self._interval = interval
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __getstate__(self) -> dict:
        return {"_storage": None, "_interval": self._interval}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["_storage"], state["_interval"])  # type: ignore[misc]

    def add(self, trial_id: int) -> None:
        """Start beating for a trial; the first beat is recorded now.

        Args:
            trial_id: Optuna's trial id (``trial._trial_id``).
        """
        if self._storage is None:
            return
        self._beat(trial_id)
        with self._lock:
            self._ids.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rknas-heartbeats", daemon=True)
                self._thread.start()

    def remove(self, trial_id: int) -> None:
        """Stop beating for a trial (its last heartbeat stays in the storage).

        Args:
            trial_id: Optuna's trial id.
        """
        with self._lock:
            self._ids.discard(trial_id)

    @property
    def trial_ids(self) -> set[int]:
        """The Optuna ids of the trials beaten for now: this driver's running trials."""
        with self._lock:
            return set(self._ids)

    def stop(self) -> None:
        """Stop the thread (the trials' last heartbeats stay in the storage)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30)
        self._stop = threading.Event()

    def _beat(self, trial_id: int) -> None:
        try:
            self._storage.record_heartbeat(trial_id)
        except Exception as exc:  # the database may be busy or briefly unreachable; beat again later
            logger.warning("could not record the heartbeat of trial id %s: %s", trial_id, exc)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for trial_id in self.trial_ids:
                self._beat(trial_id)


def interrupt_trials(study: optuna.Study, trial_ids: Iterable[int], reason: str) -> list[int]:
    """Mark RUNNING trials FAIL with ``interrupted`` and ``reason`` in their record, atomically.

    State and record change in one transaction, and only while the trial is still RUNNING:
    a trial its owner told meanwhile is left as told. This is what makes it safe for several
    drivers to recover the same stale trial, or for a slow owner to finish late.

    Args:
        study: The study.
        trial_ids: Optuna trial ids (``trial._trial_id``).
        reason: The ``fail_reason`` to record.

    Returns:
        The numbers of the trials this call marked.
    """
    backend = rdb_backend(study._storage)
    attrs = TrialRecord(interrupted=True, fail_reason=reason).user_attrs()
    marked = []
    for trial_id in trial_ids:
        if backend is None:  # not a database (in-memory studies in tests): no concurrent writers
            trial = study._storage.get_trial(trial_id)
            if trial.state == TrialState.RUNNING:
                for key, value in attrs.items():
                    study._storage.set_trial_user_attr(trial_id, key, value)
                study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
                marked.append(trial.number)
            continue
        number = _retrying(backend, functools.partial(_interrupt_one, backend, trial_id, attrs, uuid.uuid4().hex))
        if number is not None:
            marked.append(number)
    return marked


def _retrying(backend: optuna.storages.RDBStorage, call: Callable[[], T]) -> T:
    """rknas's own queries ride through outages like Optuna's calls (``rknas.storage.retry``)."""
    return backend.retrying(call) if isinstance(backend, RetryingRDBStorage) else call()


def _interrupt_one(backend: optuna.storages.RDBStorage, trial_id: int, attrs: dict[str, Any], token: str) -> Optional[int]:
    """Mark one trial, with ``token`` in the same transaction: a retry whose earlier attempt was
    applied (its reply lost) finds its own token and still answers that it marked the trial."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trials, user_attrs, system_attrs = models.TrialModel, models.TrialUserAttributeModel, models.TrialSystemAttributeModel
    with _create_scoped_session(backend.scoped_session) as session:
        number = int(session.query(trials.number).filter(trials.trial_id == trial_id).scalar())
        changed = (
            session.query(trials)
            .filter(trials.trial_id == trial_id, trials.state == TrialState.RUNNING)
            .update({"state": TrialState.FAIL, "datetime_complete": datetime.datetime.now()}, synchronize_session=False)
        )
        if changed != 1:
            mark = session.query(system_attrs.value_json).filter(
                system_attrs.trial_id == trial_id, system_attrs.key == INTERRUPT_KEY).scalar()
            return number if mark == json.dumps(token) else None
        for key, value in attrs.items():
            session.query(user_attrs).filter(user_attrs.trial_id == trial_id, user_attrs.key == key).delete(
                synchronize_session=False)
            session.add(user_attrs(trial_id=trial_id, key=key, value_json=json.dumps(value)))
        session.add(system_attrs(trial_id=trial_id, key=INTERRUPT_KEY, value_json=json.dumps(token)))
        return number


def _without_heartbeat(backend: optuna.storages.RDBStorage, study_id: int) -> list[int]:
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trials = models.TrialModel
    with _create_scoped_session(backend.scoped_session) as session:
        rows = (
            session.query(trials.trial_id)
            .filter(trials.study_id == study_id, trials.state == TrialState.RUNNING, ~trials.heartbeats.any())
            .all()
        )
    return [r[0] for r in rows]


def recover_stale(study: optuna.Study) -> list[int]:
    """Recover the RUNNING trials of drivers that stopped recording heartbeats.

    A trial is stale when its last heartbeat is older than the storage's grace period (by the
    database's clock). Stale trials become FAIL with ``interrupted`` (they do not count) and a
    reason naming the driver. RUNNING trials with no heartbeat at all get one now, so they go
    stale one grace period later unless their owner beats.

    Args:
        study: A study on a storage opened with a heartbeat interval (else nothing happens).

    Returns:
        The numbers of the recovered trials.
    """
    backend = rdb_backend(study._storage)
    if backend is None or backend.get_heartbeat_interval() is None:
        return []
    for trial_id in _retrying(backend, lambda: _without_heartbeat(backend, study._study_id)):
        backend.record_heartbeat(trial_id)  # concurrent inserts are ignored by Optuna
    grace = backend.grace_period or 2 * (backend.get_heartbeat_interval() or 0)
    marked = []
    for trial_id in backend._get_stale_trial_ids(study._study_id):
        driver = TrialRecord.of(backend.get_trial(trial_id)).driver or "a driver that did not name itself"
        reason = f"interrupted: its driver ({driver}) recorded no heartbeat for more than {grace} s (killed or cut off)"
        marked += interrupt_trials(study, [trial_id], reason)
    return marked
