"""A connection cut inside a storage call, at three points, for every kind of call a search makes.

Between rknas and PostgreSQL sits a proxy (tests/support/cutting_proxy.py) that cuts one
connection: before the call's COMMIT reaches the server, after the server committed but before
its reply, or in the middle of a reply. Each call must then do exactly what it does without the
cut: nothing written twice, nothing lost, no error, and the state read back over a direct
connection equal to an uncut run's.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from support.cutting_proxy import MODES, CuttingProxy

from rknas.storage import retry
from rknas.storage.liveness import interrupt_trials
from rknas.storage.retry import RetryingRDBStorage

pytestmark = pytest.mark.slow

DIST = FloatDistribution(0.0, 1.0)


@pytest.fixture(scope="module")
def database(postgres_server):
    return postgres_server.create_database()


@pytest.fixture(scope="module")
def proxy(postgres_server):
    p = CuttingProxy(postgres_server.port)
    yield p
    p.close()


@pytest.fixture(scope="module")
def storages(database, proxy):
    """(through the proxy, direct): the first is the one cut, the second reads back what happened."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cut = RetryingRDBStorage(proxy.url(database), retry_s=30, heartbeat_interval=60)
    direct = optuna.storages.RDBStorage(database, heartbeat_interval=60)
    return cut, direct


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(retry, "FIRST_DELAY_S", 0.01)


@dataclass
class World:
    """A fresh study with one RUNNING trial and one WAITING (enqueued) trial, made over the direct connection."""

    cut: RetryingRDBStorage
    direct: optuna.storages.RDBStorage
    study: optuna.Study  # on the cut storage
    study_id: int
    running: int
    waiting: int

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.direct.get_all_trials(self.study_id, deepcopy=False)

    def by_id(self, trial_id: int) -> optuna.trial.FrozenTrial:
        return self.direct.get_trial(trial_id)


def make_world(cut: RetryingRDBStorage, direct: optuna.storages.RDBStorage) -> World:
    study = optuna.create_study(study_name=f"s{uuid.uuid4().hex[:8]}", storage=direct)
    study.enqueue_trial({"x": 0.5})
    running = direct.create_new_trial(study._study_id)
    direct.set_trial_param(running, "x", 0.25, DIST)
    direct.record_heartbeat(running)
    waiting = next(t._trial_id for t in study.get_trials(states=(TrialState.WAITING,)))
    return World(cut, direct, optuna.load_study(study_name=study.study_name, storage=cut), study._study_id, running, waiting)


def _visible(t: optuna.trial.FrozenTrial) -> tuple:
    """What a trial holds, without the attributes that make retries recognisable."""
    system = {k: v for k, v in t.system_attrs.items() if k not in (retry.CREATE_KEY, retry.CLAIM_KEY, retry.INTERRUPT_KEY)}
    return (t.number, t.state, t.values, t.params, t.user_attrs, system, t.intermediate_values)


Check = Callable[[World, Any], None]


def _create(w: World) -> Any:
    return w.cut.create_new_trial(w.study_id)


def _create_checked(w: World, new_id: Any) -> None:
    trials = w.trials()
    assert len(trials) == 3, [_visible(t) for t in trials]  # exactly one new trial
    assert new_id == trials[-1]._trial_id and trials[-1].state == TrialState.RUNNING and trials[-1].params == {}


def _create_from_template(w: World) -> Any:
    template = optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={"fixed_params": {"x": 0.75}})
    return w.cut.create_new_trial(w.study_id, template)


def _template_checked(w: World, new_id: Any) -> None:
    trials = w.trials()
    assert len(trials) == 3, [_visible(t) for t in trials]
    assert new_id == trials[-1]._trial_id and trials[-1].state == TrialState.WAITING
    assert trials[-1].system_attrs["fixed_params"] == {"x": 0.75}


def _claim_checked(w: World, answer: Any) -> None:
    assert answer is True  # the worker that claimed it is told so, and runs it
    assert w.by_id(w.waiting).state == TrialState.RUNNING


def _ask_checked(w: World, trial: Any) -> None:
    # study.ask() through the cut storage pops the enqueued trial: it must come back as this ask's.
    assert trial._trial_id == w.waiting and trial.params == {"x": 0.5}
    assert [t.state for t in w.trials()] == [TrialState.RUNNING, TrialState.RUNNING]


def _ask(w: World) -> Any:
    trial = w.study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    return trial


def _tell(w: World) -> Any:
    return w.cut.set_trial_state_values(w.running, TrialState.COMPLETE, [0.9])


def _told_checked(w: World, answer: Any) -> None:
    t = w.by_id(w.running)
    assert answer is True and t.state == TrialState.COMPLETE and t.values == [0.9]


def _fail(w: World) -> Any:
    return w.cut.set_trial_state_values(w.running, TrialState.FAIL)


def _failed_checked(w: World, answer: Any) -> None:
    assert answer is True and w.by_id(w.running).state == TrialState.FAIL


def _interrupt(w: World) -> Any:
    return interrupt_trials(w.study, [w.running], "interrupted: a test's reason")


def _interrupted_checked(w: World, marked: Any) -> None:
    t = w.by_id(w.running)
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "interrupted: a test's reason"
    assert marked == [t.number]  # the caller learns that it marked the trial, cut or not


# Where a call reads before it writes, its cut waits for the write (the reads are cut on their own above).
AFTER = {"claim a WAITING trial": b"UPDATE trials", "study.ask (pops the queue)": b"UPDATE trials",
         "interrupt a stale trial (rknas's own)": b"UPDATE trials", "tell (COMPLETE with a value)": b"INSERT INTO trial_values",
         "tell (FAIL)": b"UPDATE trials"}

CALLS: dict[str, tuple[Callable[[World], Any], Check]] = {
    "create_new_trial": (_create, _create_checked),
    "create_new_trial(template)": (_create_from_template, _template_checked),
    "claim a WAITING trial": (lambda w: w.cut.set_trial_state_values(w.waiting, TrialState.RUNNING), _claim_checked),
    "study.ask (pops the queue)": (_ask, _ask_checked),
    "set_trial_param": (lambda w: w.cut.set_trial_param(w.waiting, "y", 0.5, DIST),
                        lambda w, _: _equal(w.by_id(w.waiting).params, {"y": 0.5})),
    "set_trial_intermediate_value": (lambda w: w.cut.set_trial_intermediate_value(w.running, 1, 0.5),
                                     lambda w, _: _equal(w.by_id(w.running).intermediate_values, {1: 0.5})),
    "set_trial_user_attr": (lambda w: w.cut.set_trial_user_attr(w.running, "epochs_done", 2),
                            lambda w, _: _equal(w.by_id(w.running).user_attrs, {"epochs_done": 2})),
    "set_trial_system_attr": (lambda w: w.cut.set_trial_system_attr(w.running, "k", [1, 2]),
                              lambda w, _: _equal(w.by_id(w.running).system_attrs.get("k"), [1, 2])),
    "set_study_user_attr": (lambda w: w.cut.set_study_user_attr(w.study_id, "rknas", {"a": 1}),
                            lambda w, _: _equal(w.direct.get_study_user_attrs(w.study_id), {"rknas": {"a": 1}})),
    "set_study_system_attr": (lambda w: w.cut.set_study_system_attr(w.study_id, "s", "v"),
                              lambda w, _: _equal(w.direct.get_study_system_attrs(w.study_id).get("s"), "v")),
    "tell (COMPLETE with a value)": (_tell, _told_checked),
    "tell (FAIL)": (_fail, _failed_checked),
    "record_heartbeat": (lambda w: w.cut.record_heartbeat(w.running),
                         lambda w, _: _equal(len(w.direct._get_stale_trial_ids(w.study_id)), 0)),
    "interrupt a stale trial (rknas's own)": (_interrupt, _interrupted_checked),
    "get_all_trials": (lambda w: [_visible(t) for t in w.cut.get_all_trials(w.study_id)],
                       lambda w, got: _equal(got, [_visible(t) for t in w.trials()])),
    "get_trial": (lambda w: _visible(w.cut.get_trial(w.running)), lambda w, got: _equal(got, _visible(w.by_id(w.running)))),
    "_get_stale_trial_ids": (lambda w: w.cut._get_stale_trial_ids(w.study_id), lambda w, got: _equal(got, [])),
    "get_n_trials": (lambda w: w.cut.get_n_trials(w.study_id), lambda w, got: _equal(got, 2)),
}


def _create_study(w: World) -> Any:
    return optuna.create_study(study_name=f"new-{w.study_id}", storage=w.cut, load_if_exists=True, direction="maximize")


def _study_checked(w: World, study: Any) -> None:
    named = [s for s in w.direct.get_all_studies() if s.study_name == f"new-{w.study_id}"]
    assert len(named) == 1 and named[0].directions == [optuna.study.StudyDirection.MAXIMIZE]
    assert study._study_id == named[0]._study_id


CALLS["create_study (load_if_exists, as a search opens its study)"] = (_create_study, _study_checked)


def _equal(got: Any, want: Any) -> None:
    assert got == want


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("call", list(CALLS))
def test_a_cut_inside_a_call_changes_nothing(storages, proxy, mode, call):
    cut, direct = storages
    world = make_world(cut, direct)
    before = {t._trial_id: _visible(t) for t in world.trials()}
    act, check = CALLS[call]
    proxy.arm(mode, b"COMMIT", after=AFTER.get(call))
    got = act(world)
    assert proxy.cuts[-1] == (mode, b"COMMIT") and not proxy.armed  # the cut happened inside this call
    check(world, got)
    # Nothing else changed, and nothing is left RUNNING that was not RUNNING or claimed.
    after = {t._trial_id: _visible(t) for t in world.trials()}
    untouched = {i: v for i, v in before.items() if i not in (world.running, world.waiting)}
    assert {i: after[i] for i in untouched} == untouched


@pytest.mark.parametrize("call", ["get_all_trials", "get_trial", "_get_stale_trial_ids", "get_n_trials"])
def test_a_read_cut_in_the_middle_of_its_rows_is_read_again(storages, proxy, call):
    cut, direct = storages
    world = make_world(cut, direct)
    act, check = CALLS[call]
    proxy.arm("mid_reply", b"SELECT")
    got = act(world)
    assert proxy.cuts[-1] == ("mid_reply", b"SELECT") and not proxy.armed
    check(world, got)


@pytest.mark.parametrize("mode", MODES)
def test_opening_a_storage_rides_through_a_cut(database, proxy, mode):
    proxy.arm(mode, b"COMMIT")
    storage = RetryingRDBStorage(proxy.url(database), retry_s=30)
    assert proxy.cuts[-1] == (mode, b"COMMIT") and not proxy.armed
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], f"opened-{mode}")
    assert storage.get_study_name_from_id(study_id) == f"opened-{mode}"  # the opened storage works


def test_a_search_whose_commits_lose_their_replies_writes_each_trial_once(ray_local, proxy, postgres_server, tmp_path):
    """The issue's run: a digits search with two in five of its COMMITs' replies lost (applied, unanswered)."""
    import yaml
    from gated import SPACE  # tests/support is on sys.path

    from rknas.search.runner import SearchOptions, run_search
    from rknas.storage import TrialRecord

    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump({**SPACE, "architecture": {**SPACE["architecture"], "strategy": ["E", "I"]}}))
    database = postgres_server.create_database()
    before = len(proxy.cuts)
    proxy.cut_at_random("after", b"COMMIT", rate=0.4, seed=1)
    try:
        result = run_search(SearchOptions(space=str(space_file), study="cuts", trials=6, storage=proxy.url(database),
                                          concurrency=2, heartbeat_interval=1, stale_after=30))
    finally:
        proxy.stop_cutting()
    cuts = len(proxy.cuts) - before
    assert cuts >= 10, f"only {cuts} replies were lost: the run did not test what it says"
    trials = optuna.load_study(study_name="cuts", storage=database).trials
    assert result.finished == 6
    assert all(t.params for t in trials), [t.number for t in trials if not t.params]  # no trial created twice
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6  # none lost, none failed, none left RUNNING
    assert not any(TrialRecord.of(t).interrupted for t in trials)
    assert all(len(TrialRecord.of(t).val_accuracy_per_epoch) == SPACE["fidelity"]["epochs"] for t in trials)
