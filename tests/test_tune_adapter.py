"""The Tune adapter's pickling contract: Tune may pickle it, live objects stay behind."""

import pickle
import threading

import optuna
import pytest
from optuna.trial import TrialState

from rknas.search.searcher import Driver
from rknas.search.space import parse_space
from rknas.storage import Heartbeats, open_storage

pytestmark = pytest.mark.slow  # imports Ray (inside the test: the fast loop collects this file without it)

SPACE = {"name": "t", "data": {"name": "digits"}, "architecture": {"periods": 1, "strategy": ["E"], "stages": 1, "k": [8, 16]},
         "objectives": [{"metric": "val_accuracy", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}],
         "fidelity": {"epochs": 1, "early_stopping": False}}


class LockedSampler(optuna.samplers.RandomSampler):
    def __init__(self, seed=None):
        super().__init__(seed=seed)
        self.lock = threading.Lock()


@pytest.mark.parametrize("sampler", [optuna.samplers.NSGAIISampler, LockedSampler], ids=["nsga2", "locked"])
def test_a_searcher_pickles_without_its_live_objects_and_comes_back_by_attach(tmp_path, sampler):
    from rknas.search.tune_adapter import DetachedSearcherError, StudySearch, TrialEvents

    storage = open_storage(f"sqlite:///{tmp_path}/a.db")
    space = parse_space(SPACE, "t")
    beats = Heartbeats(storage, interval=3600)
    events = []
    search = StudySearch(space=space.sample, metric=space.metrics, mode=["max", "min"], sampler=sampler(seed=1),
                         study_name="s", storage=storage, rk_space=space, rk_versions={},
                         rk_events=lambda k, d: events.append(k), rk_driver=Driver("me", target=5, heartbeats=beats))
    try:
        assert search.suggest("tune-1") is not None
        blob = pickle.dumps(search)  # what Tune does when a Tuner is built
        pickle.dumps(TrialEvents(lambda k, d: None, search))  # the callback in the run config too
        copy = pickle.loads(blob)
        with pytest.raises(DetachedSearcherError, match="attach"):
            copy.suggest("tune-2")
        assert search.suggest("tune-2") is not None  # the original is untouched
        study = optuna.load_study(study_name="s", storage=storage)
        copy.attach(study, driver=Driver("other", target=5, heartbeats=beats))
        config = copy.suggest("tune-3")
        assert config is not None and set(config) >= {"p1_k"}
        assert len(study.trials) == 3 and study.trials[2].state == TrialState.RUNNING
    finally:
        beats.stop()


@pytest.mark.parametrize("deaths,counted", [(2, False), (3, True)], ids=["tune-gave-up-early", "retries-spent"])
def test_a_worker_death_counts_only_once_the_retries_are_spent(tmp_path, deaths, counted):
    """Ray 2.60 errors a PENDING trial when a second future of its dead worker fails: not the space's fault."""
    from rknas.search.tune_adapter import StudySearch
    from rknas.storage import TrialRecord, finished_trials

    storage = open_storage(f"sqlite:///{tmp_path}/a.db")
    space = parse_space({**SPACE, "objectives": [{"metric": "val_accuracy", "direction": "maximize"}]}, "t")
    beats = Heartbeats(storage, interval=3600)
    search = StudySearch(space=space.sample, metric="val_accuracy", mode="max", sampler=optuna.samplers.RandomSampler(seed=1),
                         study_name="s", storage=storage, rk_space=space, rk_versions={}, rk_max_retries=2,
                         rk_driver=Driver("me", target=5, heartbeats=beats))
    try:
        config = search.suggest("tune-1")
        for _ in range(deaths - 1):  # on_trial_recover: Tune runs it again
            search.note_retry("tune-1", "the trial's worker crashed: ActorDiedError")
        search.on_trial_complete("tune-1", error=True)  # then Tune gives up
        search.record_error("tune-1", "the trial's worker crashed: ActorDiedError")
        study = optuna.load_study(study_name="s", storage=storage)
        first = study.trials[0]
        record = TrialRecord.of(first)
        assert first.state == TrialState.FAIL and record.attempts == deaths
        assert record.interrupted is not counted and (len(finished_trials(study)) == 1) is counted
        waiting = [t for t in study.trials if t.state == TrialState.WAITING]
        if counted:
            assert record.fail_reason == "the trial's worker crashed: ActorDiedError" and not waiting
        else:
            assert "Ray Tune gave up after 2 of 3 attempts" in record.fail_reason
            assert [t.system_attrs["fixed_params"] for t in waiting] == [first.params] and config is not None
    finally:
        beats.stop()


def test_an_attempt_that_starts_again_replaces_the_curve_from_its_epoch(tmp_path):
    """A retried trial whose worker died before a checkpoint reports epochs 1, 2 again: each epoch is recorded once."""
    from rknas.search.tune_adapter import StudySearch
    from rknas.storage import TrialRecord

    storage = open_storage(f"sqlite:///{tmp_path}/a.db")
    space = parse_space({**SPACE, "objectives": [{"metric": "val_accuracy", "direction": "maximize"}],
                         "fidelity": {"epochs": 3, "early_stopping": False}}, "t")
    beats = Heartbeats(storage, interval=3600)
    search = StudySearch(space=space.sample, metric="val_accuracy", mode="max", sampler=optuna.samplers.RandomSampler(seed=1),
                         study_name="s", storage=storage, rk_space=space, rk_versions={}, rk_max_retries=2,
                         rk_driver=Driver("me", target=5, heartbeats=beats))
    try:
        search.suggest("tune-1")
        for epoch, acc in [(1, 0.5), (2, 0.6)]:  # the first attempt, then its worker dies
            search.on_trial_result("tune-1", {"epoch": epoch, "val_accuracy": acc})
        search.note_retry("tune-1", "the trial's worker crashed: ActorDiedError")
        for epoch, acc in [(1, 0.51), (2, 0.61)]:  # the second attempt starts over
            search.on_trial_result("tune-1", {"epoch": epoch, "val_accuracy": acc})
        search.on_trial_complete("tune-1", result={"epoch": 3, "val_accuracy": 0.7})
        (t,) = optuna.load_study(study_name="s", storage=storage).trials
        assert TrialRecord.of(t).val_accuracy_per_epoch == [0.51, 0.61, 0.7] and TrialRecord.of(t).attempts == 2
        assert t.state == TrialState.COMPLETE and t.value == 0.7
    finally:
        beats.stop()


def test_a_repeat_that_tune_gave_up_on_runs_again_as_a_repeat(tmp_path):
    """Racing: a re-measurement whose worker died and that Tune gave up on is enqueued again still
    marked as the repeat it was, so it runs every epoch outside ASHA and counts for its configuration."""
    from rknas.search.tune_adapter import StudySearch

    storage = open_storage(f"sqlite:///{tmp_path}/a.db")
    space = parse_space({**SPACE, "objectives": [{"metric": "val_accuracy", "direction": "maximize"}]}, "t")
    beats = Heartbeats(storage, interval=3600)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.enqueue_trial({"p1_k": 8}, user_attrs={"repeat_of": 0, "repeat": 1})
    search = StudySearch(space=space.sample, metric="val_accuracy", mode="max", sampler=optuna.samplers.RandomSampler(seed=1),
                         study_name="s", storage=storage, rk_space=space, rk_versions={}, rk_max_retries=2,
                         rk_driver=Driver("me", target=5, heartbeats=beats))
    try:
        search.suggest("tune-1")
        search.on_trial_complete("tune-1", error=True)  # Tune gives up at once
        search.record_error("tune-1", "the trial's worker crashed: ActorDiedError")
        waiting = [t for t in optuna.load_study(study_name="s", storage=storage).trials if t.state == TrialState.WAITING]
        assert [(t.user_attrs.get("repeat_of"), t.user_attrs.get("repeat")) for t in waiting] == [(0, 1)]
    finally:
        beats.stop()
