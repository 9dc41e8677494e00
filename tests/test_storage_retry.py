"""What counts as a transient storage error, and the retry loop, without a server."""

import sqlite3

import pytest
from sqlalchemy import exc as sa_exc

from rknas.storage import retry


def op_error(orig):
    return sa_exc.OperationalError("SELECT 1", {}, orig)


class PgOperational(Exception):
    __module__ = "psycopg"


@pytest.mark.parametrize("error,transient", [
    (op_error(PgOperational("terminating connection due to administrator command")), True),
    (op_error(PgOperational("connection refused")), True),
    (op_error(sqlite3.OperationalError("database is locked")), True),
    (op_error(sqlite3.OperationalError("no such table: trials")), False),  # a schema error is not an outage
    (sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")), False),
    (ValueError("x"), False),
])
def test_is_transient(error, transient):
    assert retry.is_transient(error) is transient
    wrapped = RuntimeError("optuna's StorageInternalError")
    wrapped.__cause__ = error
    assert retry.is_transient(wrapped) is transient  # Optuna wraps what SQLAlchemy raised


def test_a_call_is_retried_until_it_answers(monkeypatch):
    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    calls, resets = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise op_error(PgOperational("connection refused"))
        return "ok"

    assert retry.call_with_retry(flaky, limit_s=60, where="postgresql://u:***@h/db", reset=lambda: resets.append(1)) == "ok"
    assert len(calls) == 4 and len(resets) == 3


def test_beyond_the_limit_one_line_naming_the_storage(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(retry.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(retry.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))

    def down():
        raise op_error(PgOperational("connection refused\nIs the server running?"))

    with pytest.raises(retry.StorageUnavailable) as exc:
        retry.call_with_retry(down, limit_s=10, where="postgresql://u:***@h/db")
    message = str(exc.value)
    assert "\n" not in message and "postgresql://u:***@h/db" in message and "connection refused" in message
    assert "run the same command again" in message and 5 <= now[0] <= 10


def test_other_errors_are_not_retried():
    calls = []

    def wrong():
        calls.append(1)
        raise ValueError("bad")

    with pytest.raises(ValueError):
        retry.call_with_retry(wrong, limit_s=60, where="x")
    assert calls == [1]


def test_a_state_write_whose_answer_was_lost_is_not_taken_for_another_drivers(tmp_path, monkeypatch):
    """The write reached the database, the connection died before the answer: the retry finds it done."""
    import optuna
    from optuna.trial import TrialState

    from rknas.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    real = optuna.storages.RDBStorage.set_trial_state_values
    calls = []

    def lost_answer(self, trial_id, state, values=None):
        calls.append(1)
        result = real(self, trial_id, state, values)
        if len(calls) == 1:
            raise op_error(PgOperational("server closed the connection unexpectedly"))
        return result

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", lost_answer)
    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    assert storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.5]) is True
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].value == 0.5


def test_a_loop_that_gave_up_is_not_retried_by_an_outer_one():
    try:
        try:
            raise op_error(PgOperational("connection refused"))
        except Exception:
            raise retry.StorageUnavailable("gave up") from None
    except retry.StorageUnavailable as exc:
        assert exc.__context__ is not None and not retry.is_transient(exc)


@pytest.mark.parametrize("error,dropped", [
    (op_error(PgOperational("server closed the connection unexpectedly\n\tThis probably means ...")), True),
    (op_error(PgOperational("terminating connection due to administrator command")), True),
    (op_error(PgOperational('connection to server at "127.0.0.1", port 5 failed: Connection refused')), False),
    (op_error(PgOperational('could not translate host name "dbhost" to address')), False),
])
def test_opening_rides_through_a_dropped_connection_but_not_a_refusal(tmp_path, monkeypatch, error, dropped):
    """A cut while the storage is opened (issue 24) is retried; a wrong address is said at once."""
    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    real, calls = retry.RDBStorage.__init__, []

    def cut_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        real(self, *args, **kwargs)

    monkeypatch.setattr(retry.RDBStorage, "__init__", cut_once)
    url = f"sqlite:///{tmp_path}/s.db"
    if dropped:
        storage = retry.RetryingRDBStorage(url, retry_s=30)
        assert len(calls) == 2 and storage.get_all_studies() == []
    else:
        with pytest.raises(sa_exc.OperationalError):
            retry.RetryingRDBStorage(url, retry_s=30)
        assert len(calls) == 1  # no retry: the user hears about a wrong address now
