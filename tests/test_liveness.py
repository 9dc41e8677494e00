"""Several drivers on one study, piece by piece (no Ray): heartbeats, stale trials, ownership.

Each test runs on SQLite and on the private PostgreSQL server (``any_storage``). Staleness is
made by writing an old heartbeat, never by waiting, so nothing depends on the machine's speed.
"""

import pickle
import threading

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import text

from rknas.search import searcher as searcher_module
from rknas.search.searcher import Driver
from rknas.search.space import parse_space
from rknas.storage import Heartbeats, TrialRecord, interrupt_trials, open_storage, recover_stale

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")


def heartbeat_rows(storage):
    with storage.engine.connect() as conn:
        return dict(conn.execute(text("SELECT trial_id, heartbeat FROM trial_heartbeats")).all())


def make_stale(storage, trial_id):
    with storage.engine.begin() as conn:
        conn.execute(text("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00' WHERE trial_id = :i"), {"i": trial_id})


def test_interrupt_marks_only_running_trials_and_only_once(any_storage):
    study = optuna.create_study(storage=any_storage)
    running, told = study.ask(), study.ask()
    study.tell(told, 0.5)
    assert interrupt_trials(study, [running._trial_id, told._trial_id], "interrupted: test") == [running.number]
    a, b = study.trials
    assert a.state == TrialState.FAIL and TrialRecord.of(a).interrupted and TrialRecord.of(a).fail_reason == "interrupted: test"
    assert b.state == TrialState.COMPLETE and not TrialRecord.of(b).interrupted and b.value == 0.5
    assert interrupt_trials(study, [running._trial_id], "again") == []  # already finished: untouched
    assert TrialRecord.of(study.trials[0]).fail_reason == "interrupted: test"


def test_concurrent_recoveries_of_one_trial_mark_it_once(any_storage):
    study = optuna.create_study(storage=any_storage, study_name="s")
    trial_id = study.ask()._trial_id
    marked, barrier = [], threading.Barrier(6)

    def recover(i):
        mine = optuna.load_study(study_name="s", storage=any_storage)  # each its own connection
        barrier.wait()
        marked.extend(interrupt_trials(mine, [trial_id], f"interrupted: by {i}"))

    threads = [threading.Thread(target=recover, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert marked == [0]
    assert study.trials[0].state == TrialState.FAIL


def test_recover_stale_takes_only_trials_whose_heartbeat_is_old(any_storage):
    storage = open_storage(any_storage, heartbeat_interval=1, grace_period=60)
    study = optuna.create_study(storage=storage, study_name="s")
    dead, alive, silent = study.ask(), study.ask(), study.ask()
    dead.set_user_attr("driver", "host:1:dead")
    for t in (dead, alive):
        storage.record_heartbeat(t._trial_id)
    make_stale(storage, dead._trial_id)
    assert recover_stale(study) == [dead.number]
    trials = study.trials
    record = TrialRecord.of(trials[0])
    assert trials[0].state == TrialState.FAIL and record.interrupted
    assert "host:1:dead" in record.fail_reason and "no heartbeat for more than 60 s" in record.fail_reason
    assert trials[1].state == trials[2].state == TrialState.RUNNING
    # A trial that never had a heartbeat (an older, killed rknas) gets one: it goes stale like any other.
    assert silent._trial_id in heartbeat_rows(storage)
    make_stale(storage, silent._trial_id)
    assert recover_stale(study) == [silent.number]


def test_heartbeats_start_at_once_and_pickle_idle(any_storage):
    storage = open_storage(any_storage, heartbeat_interval=1, grace_period=60)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    beats = Heartbeats(storage, interval=3600)  # the thread would not beat again within the test
    beats.add(trial._trial_id)
    try:
        assert trial._trial_id in heartbeat_rows(storage)  # a driver killed right after asking is recoverable
        assert beats.trial_ids == {trial._trial_id}
        idle = pickle.loads(pickle.dumps(beats))
        idle.add(12345)  # no storage: nothing recorded, nothing raised
        assert idle.trial_ids == set()
        beats.remove(trial._trial_id)
        assert beats.trial_ids == set()
    finally:
        beats.stop()


def test_driver_admits_until_finished_and_running_trials_reach_the_target(any_storage, monkeypatch):
    storage = open_storage(any_storage, heartbeat_interval=1, grace_period=60)
    study = optuna.create_study(storage=storage)
    other = study.ask()  # another driver's live trial
    storage.record_heartbeat(other._trial_id)
    study.tell(study.ask(), 0.5)
    now = [0.0]
    monkeypatch.setattr(searcher_module, "clock", lambda: now[0])
    beats = Heartbeats(storage, interval=3600)
    driver = Driver("me", target=3, heartbeats=beats, revision=2, deadline=100.0)
    try:
        assert driver.admit(study) is None  # 1 finished + 1 running < 3
        mine = study.ask()
        driver.started(mine)
        record = TrialRecord.of(study.trials[-1])
        assert record.driver == "me" and record.space_revision == 2 and beats.trial_ids == {mine._trial_id}
        assert driver.admit(study) == "busy"  # 1 + 2 running: wait for them
        study.tell(other, state=TrialState.FAIL)  # a FAIL counts
        study.tell(mine, 0.7)
        assert driver.admit(study) == "done"
        driver.target = 10
        assert driver.admit(study) is None
        now[0] = 100.0
        assert driver.admit(study) == "timeout" and driver.timed_out()
    finally:
        beats.stop()


def test_a_driver_ends_a_tune_round_after_its_round_limit_and_starts_the_next_afresh(any_storage):
    storage = open_storage(any_storage, heartbeat_interval=1, grace_period=60)
    study = optuna.create_study(storage=storage)
    beats = Heartbeats(storage, interval=3600)
    driver = Driver("me", target=10, heartbeats=beats, round_limit=2)
    try:
        driver.new_round()
        for _ in range(2):
            assert driver.admit(study) is None
            trial = study.ask()
            driver.started(trial)
            study.tell(trial, 0.5)
        assert driver.admit(study) == "round"  # 2 finished of 10: the study wants more, this round is full
        driver.new_round()
        assert driver.admit(study) is None and driver.stop_reason is None
        assert driver.started_count == 2 and driver.round_started == 0
    finally:
        beats.stop()


SPACE = {"name": "t", "data": {"name": "digits"}, "architecture": {"periods": 1, "strategy": ["E"], "stages": 1, "k": [8, 16]},
         "fidelity": {"epochs": 3, "min_epochs": 1}}


@pytest.mark.slow  # imports Ray (the adapter)
def test_telling_a_trial_another_driver_recovered_is_logged_not_raised(any_storage):
    from rknas.search.tune_adapter import StudySearch

    """The crash seen with two drivers: UpdateFinishedTrialError when telling a recovered trial."""
    storage = open_storage(any_storage, heartbeat_interval=1, grace_period=60)
    space = parse_space(SPACE, "t")
    events = []
    beats = Heartbeats(storage, interval=3600)
    driver = Driver("me", target=5, heartbeats=beats)
    search = StudySearch(
        space=space.sample, metric="val_accuracy", mode="max", study_name="s", storage=storage,
        rk_space=space, rk_versions={}, rk_events=lambda k, d: events.append((k, d)), rk_driver=driver,
    )
    try:
        config = search.suggest("tune-1")
        study = optuna.load_study(study_name="s", storage=storage)
        assert study.trials[0].state == TrialState.RUNNING and TrialRecord.of(study.trials[0]).driver == "me"
        assert search.unfinished() == [study.trials[0]._trial_id]
        assert interrupt_trials(study, search.unfinished(), "interrupted: taken for dead") == [0]
        search.on_trial_result("tune-1", {"epoch": 1, "val_accuracy": 0.5})
        search.on_trial_complete("tune-1", {"epoch": 3, "val_accuracy": 0.9, "params": 100, "flops": 1000, "config": config})
    finally:
        beats.stop()
    (end,) = [d for k, d in events if k == "trial_end"]
    assert end["state"] == "FAIL" and "finished by another driver as FAIL" in end["note"]
    t = optuna.load_study(study_name="s", storage=storage).trials[0]
    assert t.state == TrialState.FAIL and TrialRecord.of(t).fail_reason == "interrupted: taken for dead"
    assert t.values is None and beats.trial_ids == set() and search.unfinished() == []


@pytest.mark.slow  # imports Ray (the adapter)
def test_a_driver_with_nothing_to_do_finishes_the_round(any_storage):
    from rknas.search.tune_adapter import StudySearch

    storage = open_storage(any_storage, heartbeat_interval=1, grace_period=60)
    space = parse_space(SPACE, "t")
    beats = Heartbeats(storage, interval=3600)
    search = StudySearch(space=space.sample, metric="val_accuracy", mode="max", study_name="s", storage=storage,
                              rk_space=space, rk_versions={}, rk_driver=Driver("me", target=1, heartbeats=beats))
    study = optuna.load_study(study_name="s", storage=storage)
    study.tell(study.ask(), 0.5)
    assert search.suggest("tune-1") == search.FINISHED
    assert len(study.trials) == 1  # nothing asked


@pytest.mark.parametrize("url", ["postgresql://u:secret@127.0.0.1:1/db", "postgresql+psycopg://u:secret@127.0.0.1:1/db"])
def test_postgres_url_without_its_driver_says_what_to_install(cli, monkeypatch, url):
    monkeypatch.setitem(__import__("sys").modules, "psycopg", None)
    code, _, err = cli("search", "--space", "digits_quick", "--storage", url)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "pip install 'rknas[postgres]'" in err and "secret" not in err and "***" in err
