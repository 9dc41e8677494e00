"""Riding through storage outages: a database that restarts, a network blip, a locked SQLite file.

Every call the driver makes on its storage (asks, tells, heartbeats, stale-trial recovery,
progress queries) goes through ``RetryingRDBStorage``: a call that fails because the
connection was lost is retried with backoff until the storage answers again, up to the
storage's ``retry_s``; beyond it ``StorageUnavailable`` says which storage and how to continue.
Connections are checked before use (SQLAlchemy's ``pool_pre_ping``), so a pooled connection
from before a restart is replaced rather than failing the next call. Only transient errors are
retried: lost or refused connections, and "database is locked" on SQLite; anything else
(a constraint, a schema error) raises at once.

A connection can also die after the server committed a call's transaction and before its
reply arrived; the retry then meets its own earlier write. Each write is made safe to repeat:
Optuna's attribute, intermediate-value and parameter writes are upserts or ignore their own
duplicate; ``create_new_trial`` writes a fresh key into the new trial's system attributes in
the same transaction and, on a retry, first looks for it; claiming a WAITING trial records a
token with the claim, and so does marking a stale trial interrupted (``liveness``); a state
change that finds the trial already in that state is the earlier attempt's.
"""

from __future__ import annotations

import copy
import datetime
import errno
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sa_exc

from rknas.errors import RknasError
from rknas.storage.defaults import DEFAULT_RETRY_S
from rknas.storage.racing import REPEAT, REPEAT_OF, repeat_marker

logger = logging.getLogger(__name__)
_active = threading.local()  # the storage whose retry loop this thread is in
T = TypeVar("T")

FIRST_DELAY_S, MAX_DELAY_S = 0.25, 5.0
# System attributes that make a repeated write recognisable as the same call's (see the module doc).
CREATE_KEY = "rknas:create_key"
CLAIM_KEY = "rknas:claim"
ONCE_KEY = "rknas:repeat_once"  # a racing repeat that is created once, whoever asks (``_pending_repeat``)
INTERRUPT_KEY = "rknas:interrupted_by"  # liveness.interrupt_trials

# The storage calls a search makes, each retried on a lost connection: the public ones, the
# private ones Optuna's cache (``_CachedStorage``, which wraps every RDBStorage a study uses)
# calls directly, and the heartbeat and stale-trial calls (BaseHeartbeat).
# tests/test_private_apis.py checks that the cache calls nothing else that reaches the database.
RETRIED = (
    "_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
    "get_best_trial", "get_n_trials", "record_heartbeat", "_get_stale_trial_ids",
)


class StorageUnavailable(RknasError):
    """The storage stayed unreachable for longer than the retry limit."""


class StorageFull(StorageUnavailable):
    """The database cannot write: its disk is full. Nothing is retried; the study is intact."""


DISK_FULL_MARKERS = ("database or disk is full", "no space left on device", "disk full", "could not extend file")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error (or one it was raised from) says the database's disk is full.

    Args:
        exc: The error.

    Returns:
        True for SQLite's "database or disk is full", PostgreSQL's DiskFull (SQLSTATE 53100)
        and ENOSPC.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        orig = getattr(e, "orig", None)
        for x in (e, orig):
            if x is None:
                continue
            if type(x).__name__ == "DiskFull" or getattr(x, "sqlstate", None) == "53100":
                return True
            if isinstance(x, OSError) and x.errno == errno.ENOSPC:
                return True
            if any(m in str(x).lower() for m in DISK_FULL_MARKERS):
                return True
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether an error means "the database is away for now" (retry) rather than "this call is wrong".

    Args:
        exc: The error, or any error it was raised from.

    Returns:
        True for lost, refused or invalidated connections, and for a locked or busy SQLite file.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StorageUnavailable):
            return False  # a retry loop gave up already: do not start another
        if isinstance(e, (sa_exc.DisconnectionError, sa_exc.PendingRollbackError)):
            return True
        if isinstance(e, sa_exc.DBAPIError):
            if e.connection_invalidated or isinstance(e, sa_exc.InterfaceError):
                return True
            if isinstance(e, sa_exc.OperationalError):
                text = str(e.orig).lower()
                # SQLite raises OperationalError for schema errors too: retry only locking.
                return "sqlite" not in type(e.orig).__module__ or "locked" in text or "busy" in text
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return False


def call_with_retry(call: Callable[[], T], *, limit_s: float, where: str, reset: Callable[[], None] | None = None) -> T:
    """Run a storage call, retrying transient errors with exponential backoff.

    Args:
        call: The call.
        limit_s: Give up when the storage has been away this long.
        where: The storage, as shown to users (no password).
        reset: Called before each retry (drop the broken session).

    Returns:
        What the call returned.

    Raises:
        StorageUnavailable: The storage was away for longer than ``limit_s``.
    """
    started = time.monotonic()
    delay = FIRST_DELAY_S
    warned = False
    while True:
        try:
            return call()
        except Exception as exc:
            if is_disk_full(exc):
                raise StorageFull(
                    f"storage {where} is out of disk space ({_one_line(exc)}); the study is intact: free space on the "
                    "database's disk, then run the same command again to continue"
                ) from None
            if not is_transient(exc):
                raise
            waited = time.monotonic() - started
            if waited + delay > limit_s:
                reason = _one_line(exc)
                raise StorageUnavailable(
                    f"storage {where} unreachable for {waited:.0f} s ({reason}); the study is intact: once the database "
                    "is back, run the same command again to continue (use --storage-retry to wait longer)"
                ) from None
            if not warned:
                logger.warning("storage %s unreachable (%s); retrying for up to %.0f s", where, _one_line(exc), limit_s)
                warned = True
            if reset is not None:
                reset()
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)


DROPPED_MARKERS = ("server closed the connection", "connection reset", "terminating connection", "connection has been closed",
                   "connection already closed", "eof detected", "broken pipe", "lost connection")


def was_dropped(exc: BaseException) -> bool:
    """Whether an error says an established connection was cut (not refused, not an unknown host).

    Args:
        exc: The error, or any error it was raised from.

    Returns:
        True when its text (or its cause's) names a dropped connection.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if any(m in f"{e} {getattr(e, 'orig', '')}".lower() for m in DROPPED_MARKERS):
            return True
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return False


def _one_line(exc: BaseException) -> str:
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    orig = getattr(root, "orig", None) or root
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    return f"{type(orig).__name__}: {lines[0][:200]}" if lines else type(orig).__name__


class RetryingRDBStorage(RDBStorage):
    """Optuna's ``RDBStorage`` whose calls ride through outages of up to ``retry_s`` seconds.

    Attributes:
        retry_s: How long a call keeps retrying before ``StorageUnavailable``.
        where: The URL without its password (for messages).
    """

    def __init__(self, url: str, *, retry_s: float = DEFAULT_RETRY_S, where: str = "", **kwargs: Any):
        self.retry_s = retry_s
        self.where = where or url
        engine_kwargs = dict(kwargs.pop("engine_kwargs", None) or {})
        engine_kwargs.setdefault("pool_pre_ping", True)

        def open_() -> None:
            RDBStorage.__init__(self, url, engine_kwargs=engine_kwargs, **kwargs)

        try:
            open_()
        except Exception as exc:
            # A connection that was there and dropped while the storage was opened (creating the
            # tables is idempotent) is ridden through like any other call; a database that
            # refuses or does not exist is said at once, not after --storage-retry seconds.
            if not (is_transient(exc) and was_dropped(exc)):
                raise
            call_with_retry(open_, limit_s=retry_s, where=self.where)

    def retrying(self, call: Callable[[], T]) -> T:
        """Run any call on this storage's database (rknas's own queries) with the same retries.

        Args:
            call: The call.

        Returns:
            What it returned.
        """
        if getattr(_active, "storage", None) is self:
            return call()  # a retried call calling another (create_new_trial -> _create_new_trial): one loop
        _active.storage = self
        try:
            return call_with_retry(call, limit_s=self.retry_s, where=self.where, reset=self.scoped_session.remove)
        finally:
            _active.storage = None

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        """Create a trial once, however many times its commit's reply is lost.

        Replaces Optuna's, which repeats the whole insert up to five times on any
        ``StorageInternalError`` (a lost reply is one), so a commit that reached the server
        and lost its answer made a second trial. Here one attempt runs per retry, and from the
        second on, a trial holding this call's key is looked for first.
        """
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        key = uuid.uuid4().hex
        template = _keyed(template_trial, key)
        repeat = repeat_key(template_trial)
        attempts = 0

        def create() -> FrozenTrial:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                earlier = self._trial_with_key(study_id, key)
                if earlier is not None:
                    return earlier
            pending = None
            with _create_scoped_session(self.scoped_session) as session:
                # Locking the study row orders concurrent creators, as Optuna's own does.
                models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                if repeat is not None:
                    pending = self._pending_repeat(study_id, repeat, session)
                if pending is None:
                    trial = self._get_prepared_new_trial(study_id, template, session)
                    frozen = copy.deepcopy(template)
                    frozen.number, frozen.datetime_start, frozen._trial_id = trial.number, trial.datetime_start, trial.trial_id
            return frozen if pending is None else RDBStorage.get_trial(self, pending)

        return self.retrying(create)

    def _pending_repeat(self, study_id: int, repeat: tuple[str, str], session: Any) -> int | None:
        """The id of a waiting or running trial that is already this repeat (racing asks for each once).

        Drivers sharing a study each decide the next repeat from what they read; two that finish
        runs at the same moment may ask for the same one. Asked inside the creating transaction,
        after a write to the study row, which SQLite (one writer at a time) and PostgreSQL (the
        row lock) both hold until the commit, so the second asker sees the first's trial.
        """
        import sqlalchemy as sa
        from optuna.storages._rdb import models

        studies = models.StudyModel.__table__
        session.execute(sa.update(studies).where(studies.c.study_id == study_id).values(study_name=studies.c.study_name))
        trials = models.TrialModel.__table__
        attrs = models.TrialUserAttributeModel.__table__
        of, k = attrs.alias(), attrs.alias()
        query = (
            sa.select(trials.c.trial_id)
            .join(of, sa.and_(of.c.trial_id == trials.c.trial_id, of.c.key == REPEAT_OF, of.c.value_json == repeat[0]))
            .join(k, sa.and_(k.c.trial_id == trials.c.trial_id, k.c.key == REPEAT, k.c.value_json == repeat[1]))
            .where(trials.c.study_id == study_id, trials.c.state.in_([TrialState.WAITING, TrialState.RUNNING]))
            .limit(1)
        )
        return session.execute(query).scalar()

    def _trial_with_key(self, study_id: int, key: str) -> FrozenTrial | None:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        attrs, trials = models.TrialSystemAttributeModel, models.TrialModel
        with _create_scoped_session(self.scoped_session) as session:
            trial_id = (
                session.query(attrs.trial_id)
                .join(trials, trials.trial_id == attrs.trial_id)
                .filter(trials.study_id == study_id, attrs.key == CREATE_KEY, attrs.value_json == json.dumps(key))
                .scalar()
            )
        return None if trial_id is None else RDBStorage.get_trial(self, trial_id)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state == TrialState.RUNNING:
            return self._claim(trial_id)
        attempts = 0

        def write() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # A retry after a write that reached the database but whose answer was lost:
                # the trial already holds exactly what this call writes.
                if attempts > 1 and RDBStorage.get_trial(self, trial_id).state == state:
                    return True
                raise

        return self.retrying(write)

    def _claim(self, trial_id: int) -> bool:
        """WAITING -> RUNNING (a worker taking an enqueued trial), with a token in the same transaction.

        Optuna answers False when the trial is no longer WAITING ("another worker took it"), which
        is also what a retry after a lost reply would see; the token tells the two apart.
        """
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        token = uuid.uuid4().hex
        attempts = 0

        def claim() -> bool:
            nonlocal attempts
            attempts += 1
            with _create_scoped_session(self.scoped_session) as session:
                trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
                self.check_trial_is_updatable(trial_id, trial.state)
                if trial.state != TrialState.WAITING:
                    return attempts > 1 and RDBStorage.get_trial(self, trial_id).system_attrs.get(CLAIM_KEY) == token
                trial.state = TrialState.RUNNING
                trial.datetime_start = datetime.datetime.now()
                self._set_trial_attr_without_commit(session, models.TrialSystemAttributeModel, trial_id, CLAIM_KEY, token)
            return True

        return self.retrying(claim)


def repeat_key(template: FrozenTrial | None) -> tuple[str, str] | None:
    """``(repeat_of, repeat)`` as stored (JSON) of a racing repeat asked for once (``queries.enqueue_repeat``);
    None for any other trial, a failed repeat enqueued again among them."""
    if template is None or template.state != TrialState.WAITING or not template.system_attrs.get(ONCE_KEY):
        return None
    marker = repeat_marker(template.user_attrs)
    return None if marker is None else (json.dumps(marker[0]), json.dumps(marker[1]))


def _keyed(template: FrozenTrial | None, key: str) -> FrozenTrial:
    """``template`` (or Optuna's default: a RUNNING trial starting now) with ``key`` among its system attributes."""
    if template is None:
        return FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                           datetime_start=datetime.datetime.now(), datetime_complete=None, params={}, distributions={},
                           user_attrs={}, system_attrs={CREATE_KEY: key}, intermediate_values={}, trial_id=-1)
    keyed = copy.copy(template)
    keyed.system_attrs = {**template.system_attrs, CREATE_KEY: key}
    return keyed


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self.retrying(lambda: method(self, *args, **kwargs))

    return call


for _name in RETRIED:
    # Written above, each with its own check for an earlier attempt that was applied. The
    # public create_new_trial is left to call the private one: wrapped, its retry would
    # start over with a new key.
    if _name not in ("set_trial_state_values", "_create_new_trial", "create_new_trial") and hasattr(RDBStorage, _name):
        setattr(RetryingRDBStorage, _name, _retried(_name))
