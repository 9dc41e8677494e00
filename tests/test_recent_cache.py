"""A driver with a sampler window caches the recent trials only, and samples exactly as with Optuna's cache."""

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from rknas.search.runner import driver_storage
from rknas.search.samplers import windowed
from rknas.storage.recent import RecentTrialsCache


@pytest.fixture(params=["sqlite", "postgresql"])
def two_urls(request, tmp_path):
    """Two fresh, empty databases of one kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    server = request.getfixturevalue("postgres_server")
    return server.create_database(), server.create_database()


def _search(storage, n=40):
    """A windowed TPE search of ``n`` trials with trial 3 left running and one trial waiting: its proposals."""
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                                sampler=windowed(optuna.samplers.TPESampler(n_startup_trials=5, seed=3), 10))
    proposals, left = [], None
    for i in range(n):
        t = study.ask()
        x, k = t.suggest_float("x", -3, 3), t.suggest_categorical("k", ["a", "b", "c"])
        proposals.append((x, k))
        if i == 3:
            left = t  # a trial still running (another driver's, say): the constant liar reads it
            continue
        study.tell(t, -(x - 1) ** 2 + (k == "b"))
        if i == 20:
            study.enqueue_trial({"x": 0.5, "k": "c"})
    return study, proposals, left


def test_a_windowed_search_proposes_the_same_through_the_recent_cache(two_urls):
    plain_url, recent_url = two_urls
    _, plain, _ = _search(plain_url)
    study, recent, left = _search(RecentTrialsCache(RDBStorage(recent_url), keep=10))
    assert recent == plain and recent[21] == (0.5, "c")  # the waiting trial was asked for, through the cache
    cached = study._storage.get_all_trials(study._study_id, deepcopy=False)
    finished = [t.number for t in cached if t.state.is_finished()]
    assert 10 <= len(finished) <= 20 and finished == list(range(39 - len(finished) + 1, 40))  # the latest ones
    assert left.number in [t.number for t in cached if t.state == TrialState.RUNNING]
    assert len(optuna.load_study(study_name="s", storage=recent_url).trials) == 40  # nothing lost in the database


def test_the_first_read_starts_at_the_window_and_what_is_not_cached_is_read_from_the_database(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url)
    old = study.ask()  # number 0, still running
    for i in range(30):
        study.tell(study.ask(), float(i))
    cache = RecentTrialsCache(RDBStorage(url), keep=5)
    seen = cache.get_all_trials(study._study_id, deepcopy=False)
    assert [t.number for t in seen] == [0, 26, 27, 28, 29, 30]  # the running one and the latest 5 finished
    assert cache.get_trial(study.trials[3]._trial_id).value == 2.0  # not cached: from the database
    assert cache.get_trial_id_from_study_id_trial_number(study._study_id, 3) == study.trials[3]._trial_id
    assert old.number == 0


def test_a_driver_caches_the_recent_trials_only_with_a_window(tmp_path):
    rdb = RDBStorage(f"sqlite:///{tmp_path}/s.db")
    assert isinstance(driver_storage(rdb, 1000), RecentTrialsCache) and driver_storage(rdb, 1000).keep == 1000
    assert driver_storage(rdb, None) is rdb  # Optuna puts its own cache around it: TPE reads every trial
    memory = optuna.storages.InMemoryStorage()
    assert driver_storage(memory, 1000) is memory
