"""rknas.storage.bulk answers exactly what Optuna's own reads answer, on every kind of trial."""

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from rknas.storage import open_storage
from rknas.storage.bulk import counted, load_trials, pareto_front, tally


def _fill(study: optuna.Study) -> None:
    """Trials of every state, with every kind of value Optuna stores."""
    dists = {"k": IntDistribution(8, 64, step=8), "lr": FloatDistribution(1e-3, 1.0, log=True),
             "rule": CategoricalDistribution(["E", "I", "R", None])}
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[0.9, -120.0], params={"k": 16, "lr": 0.01, "rule": "I"},
                                 distributions=dists, user_attrs={"seed": 3, "network": {"a": [1, 2]}},
                                 system_attrs={"s": "x"}, intermediate_values={0: 0.5, 1: float("nan"), 2: 0.9}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, values=[float("inf"), float("-inf")],
                                 params={"k": 64, "rule": None}, distributions={k: dists[k] for k in ("k", "rule")}))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"lr": 0.5}, distributions={"lr": dists["lr"]},
                                 intermediate_values={0: float("inf"), 1: float("-inf")}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "boom"}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"interrupted": True}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"interrupted": True}))
    study.enqueue_trial({"k": 8})
    study.ask()  # RUNNING (took the enqueued one)
    study.ask()  # RUNNING
    study.enqueue_trial({"k": 24})  # WAITING


def _same(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> bool:
    def norm(x):
        return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in x.items()}

    return (a.number, a.state, a.values, a.datetime_start, a.datetime_complete, a.params, a.distributions, a.user_attrs,
            a.system_attrs, norm(a.intermediate_values), a._trial_id) == (
        b.number, b.state, b.values, b.datetime_start, b.datetime_complete, b.params, b.distributions, b.user_attrs,
        b.system_attrs, norm(b.intermediate_values), b._trial_id)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])  # UTC: stored times are handed out as they are
def test_load_trials_and_tally_equal_optunas_reads_on_a_database(any_storage, zone, monkeypatch):
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        _check(open_storage(any_storage))
    finally:
        monkeypatch.undo()
        time.tzset()


def test_load_trials_and_tally_equal_optunas_reads_in_memory():
    _check(optuna.storages.InMemoryStorage())


def _check(storage):
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    other = optuna.create_study(study_name="other", storage=storage)  # a second study's trials are not counted
    other.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0))
    _fill(study)

    expected = study.get_trials(deepcopy=False)
    got = load_trials(study)
    assert len(got) == len(expected) == 9
    assert all(_same(a, b) for a, b in zip(got, expected))
    for states in [(TrialState.COMPLETE,), (TrialState.PRUNED, TrialState.FAIL), (TrialState.WAITING,)]:
        assert [t.number for t in load_trials(study, states=states)] == [t.number for t in study.get_trials(states=states)]
    picked = [expected[0]._trial_id, expected[3]._trial_id]
    assert [t.number for t in load_trials(study, trial_ids=picked)] == [0, 3]
    assert load_trials(study, trial_ids=[]) == []

    lean = load_trials(study, user_keys=["seed", "fail_reason"])
    if storage.__class__.__name__ != "InMemoryStorage":  # a lean read is a saving in SQL only
        assert [t.user_attrs for t in lean] == [{"seed": 3}, {}, {}, {"fail_reason": "boom"}, {}, {}, {}, {}, {}]
        assert all(t.system_attrs == {} and t.intermediate_values == {} for t in lean)
    assert [(t.number, t.state, t.values, t.params) for t in lean] == [(t.number, t.state, t.values, t.params) for t in expected]

    assert tally(study) == {"COMPLETE": 2, "PRUNED": 1, "FAIL": 1, "INTERRUPTED": 2, "RUNNING": 2, "WAITING": 1}
    assert counted(study) == (4, 2)
    assert tally(other) == {"COMPLETE": 1}


def test_pareto_front_is_optunas_best_trials():
    import random

    rng = random.Random(0)
    for directions in (["maximize", "minimize"], ["maximize", "maximize", "minimize"]):
        study = optuna.create_study(directions=directions)
        for _ in range(300):  # a trade-off in coarse values: a front of many points, ties and duplicates
            gains = [rng.randint(0, 12) for _ in directions[1:]]
            study.add_trial(create_trial(state=TrialState.COMPLETE, values=[*gains, sum(gains) + rng.randint(0, 3)]))
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert [t.number for t in pareto_front(complete, study.directions)] == sorted(t.number for t in study.best_trials)
        assert len(study.best_trials) > 3
    assert pareto_front([], study.directions) == []


def test_incremental_complete_equals_a_full_read_after_every_step_and_reads_only_from_the_floor(tmp_path, monkeypatch):
    """Trials start, complete, fail and are enqueued in random order; after every step the
    incremental reader returns exactly what a full read does, reading from the lowest unfinished id."""
    import random

    from rknas.storage import bulk
    from rknas.storage.bulk import IncrementalComplete

    study = optuna.create_study(study_name="inc", storage=open_storage(f"sqlite:///{tmp_path / 'i.db'}"))
    reader = IncrementalComplete(study, user_keys=("seed",))
    floors = []
    real = bulk.load_trials

    def spy(*args, **kwargs):
        floors.append(kwargs.get("from_trial_id", 0))
        return real(*args, **kwargs)

    rng = random.Random(0)
    running = []
    for step in range(120):
        action = rng.choice(["start", "start", "finish", "finish", "fail", "enqueue", "read"])
        if action == "start":
            t = study.ask()
            t.set_user_attr("seed", step)
            running.append(t)
        elif action == "enqueue":
            study.enqueue_trial({"x": 1.0})
        elif action in ("finish", "fail") and running:
            t = running.pop(rng.randrange(len(running)))
            study.tell(t, float(step) if action == "finish" else None,
                       state=TrialState.COMPLETE if action == "finish" else TrialState.FAIL)
        monkeypatch.setattr(bulk, "load_trials", spy)
        got = reader.trials()
        monkeypatch.setattr(bulk, "load_trials", real)
        want = real(study, states=(TrialState.COMPLETE,), user_keys=("seed",))
        assert [(t.number, t.values, t.user_attrs) for t in got] == [(t.number, t.values, t.user_attrs) for t in want]
    assert len(want) > 10 and running  # the walk left trials of every kind
    assert max(floors) > 0 and floors == sorted(floors)  # reads moved on, never back


def test_incremental_complete_misses_no_trial_created_while_it_finds_its_floor(postgres_server):
    """Another driver creates a trial between the floor's two statements (the highest id, the
    lowest unfinished id): the floor stays at or below that trial, so its completion is read.
    On PostgreSQL, where each statement sees what was committed before it (SQLite's reader holds
    the database for both)."""
    import sqlalchemy as sa

    from rknas.storage.bulk import IncrementalComplete, rdb_of

    url = postgres_server.create_database()
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    study.optimize(lambda t: 1.0, n_trials=1)
    other = optuna.load_study(study_name="race", storage=url)  # another driver, its own connections
    reader = IncrementalComplete(study)
    created = []

    def between(conn, cursor, statement, parameters, context, executemany):
        text = statement.lower()
        if not created and ("max(trials.trial_id)" in text or "min(trials.trial_id)" in text):
            created.append(other.ask())  # lands after the floor's first statement, before its second

    engine = rdb_of(study).engine
    sa.event.listen(engine, "after_cursor_execute", between)
    try:
        assert [t.number for t in reader.trials()] == [0]
    finally:
        sa.event.remove(engine, "after_cursor_execute", between)
    assert created
    other.tell(created[0], 2.0)
    assert [t.number for t in reader.trials()] == [0, 1]


def test_incremental_complete_reads_everything_from_optunas_own_storages():
    from rknas.storage.bulk import IncrementalComplete

    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    reader = IncrementalComplete(study)
    assert [t.number for t in reader.trials()] == [0, 1, 2]
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert [t.number for t in reader.trials()] == [0, 1, 2, 3]


def test_reading_trials_by_id_has_no_bound_parameter_limit(tmp_path):
    """SQLite before 3.32 takes at most 999 bound parameters: a read of more trials by id still works
    (the limit is lowered to 20 here, on every connection of the study's engine)."""
    import sqlite3

    import sqlalchemy as sa

    from rknas.storage.bulk import rdb_of

    study = optuna.create_study(study_name="ids", storage=open_storage(f"sqlite:///{tmp_path / 'ids.db'}"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=30)
    engine = rdb_of(study).engine
    engine.dispose()

    def low_limit(dbapi_conn, record):
        dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 20)

    sa.event.listen(engine, "connect", low_limit)
    ids = [t._trial_id for t in study.trials]
    got = load_trials(study, trial_ids=ids)
    assert [t.number for t in got] == list(range(30)) and all("x" in t.params for t in got)
