"""The Ray and Optuna internals rknas relies on, pinned: an upgrade that renames or reshapes one
fails here first, and the message names the rknas code to adapt.

Each test exercises the private name the way rknas uses it (exists, type, shape), on real
objects. Public APIs are not pinned here; the rest of the suite covers them.
"""

import datetime
import inspect
import json
import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState


def where(user: str) -> str:
    return f"Ray/Optuna changed an internal that {user} uses: adapt it there"


# ---- Ray -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_loopback_switch():
    import ray._private.ray_constants as ray_constants

    from rknas.search.ray_env import LOOPBACK_ENV

    msg = where("rknas.search.ray_env.keep_ray_on_loopback (ray._private.ray_constants.ENABLE_RAY_CLUSTER)")
    assert isinstance(getattr(ray_constants, "ENABLE_RAY_CLUSTER", None), bool), msg
    assert set(LOOPBACK_ENV) == {getattr(ray_constants, "ENABLE_RAY_CLUSTERS_ENV_VAR", None)}, msg


@pytest.mark.slow
def test_ray_reads_the_gcs_wait_variable_when_joining():
    import ray._private.node as node

    from rknas.search.ray_env import GCS_WAIT_ENV

    msg = where(f"rknas.search.ray_env._quick_connect ({GCS_WAIT_ENV} read by ray._private.node when connecting)")
    assert GCS_WAIT_ENV in inspect.getsource(node.Node), msg


TOKEN_CHECK = r"""
import json, os, sys
from pathlib import Path
import ray
from ray._raylet import AuthenticationMode, AuthenticationTokenLoader, get_authentication_mode
from ray.exceptions import AuthenticationError
from rknas.search.ray_env import auth_token_source, use_token_auth

home, other = Path(sys.argv[1]), Path(sys.argv[2])
(home / ".ray").mkdir()
(other / "t").write_text("  tok  \n")
(other / "blank").write_text(" \n")
cases = {
    "home file": ({}, "tok"), "no token": ({}, None), "blank home file": ({}, " \n"),
    "variable": ({"RAY_AUTH_TOKEN": "abc"}, "tok"), "empty variable": ({"RAY_AUTH_TOKEN": ""}, "tok"),
    "blank variable": ({"RAY_AUTH_TOKEN": "  "}, "tok"),
    "variable before path": ({"RAY_AUTH_TOKEN": "abc", "RAY_AUTH_TOKEN_PATH": str(other / "t")}, None),
    "path": ({"RAY_AUTH_TOKEN_PATH": str(other / "t")}, None),
    "path before home": ({"RAY_AUTH_TOKEN_PATH": str(other / "t")}, "tok"),
    "missing path, home file": ({"RAY_AUTH_TOKEN_PATH": str(other / "nope")}, "tok"),
    "blank path file": ({"RAY_AUTH_TOKEN_PATH": str(other / "blank")}, "tok"),
}
loader = AuthenticationTokenLoader.instance()
out = {}
for name, (env, home_token) in cases.items():
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        os.environ.pop(k, None)
    os.environ.update(env)
    os.environ["HOME"] = str(home)
    (home / ".ray" / "auth_token").unlink(missing_ok=True)
    if home_token is not None:
        (home / ".ray" / "auth_token").write_text(home_token)
    loader.reset_cache()
    try:
        ray_has = loader.has_token(ignore_auth_mode=True)
    except AuthenticationError:  # Ray raises for a RAY_AUTH_TOKEN_PATH it cannot read
        ray_has = False
    out[name] = [ray_has, auth_token_source()[1]]
os.environ.pop("RAY_AUTH_MODE", None)
before = get_authentication_mode() == AuthenticationMode.TOKEN
use_token_auth()
out["use_token_auth"] = [not before, get_authentication_mode() == AuthenticationMode.TOKEN]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_ray_finds_the_token_where_rknas_looks_and_token_mode_switches_after_import(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "other").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    run = subprocess.run([sys.executable, "-c", TOKEN_CHECK, str(tmp_path / "home"), str(tmp_path / "other")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    msg = where("rknas.search.ray_env.auth_token_source / use_token_auth (Ray's token lookup, ray._raylet.Config)")
    assert {k: v for k, v in got.items() if v[0] != v[1]} == {}, msg
    assert got["home file"] == [True, True] and got["no token"] == [False, False]  # the check can tell the cases apart
    assert got["use_token_auth"] == [True, True], msg


@pytest.mark.slow
def test_optuna_search_internals():
    from ray.tune.search.optuna import OptunaSearch

    def space(trial):
        trial.suggest_float("x", 0, 1)

    searcher = OptunaSearch(space=space, metric="m", mode="max", seed=1)
    msg = where("rknas.search.searcher.StudySearch (OptunaSearch._ot_study/_ot_trials/_completed_trials)")
    assert isinstance(getattr(searcher, "_ot_study", None), optuna.Study), msg
    assert getattr(searcher, "_ot_trials", None) == {} and getattr(searcher, "_completed_trials", None) == set(), msg
    ot = searcher._ot_study.ask()
    searcher._ot_trials["t1"] = ot  # StudySearch asks itself, then lets OptunaSearch sample on that trial
    config = searcher.suggest("t1")
    assert searcher._ot_trials["t1"] is ot and config == {"x": ot.params["x"]}, msg
    searcher.on_trial_complete("t1", {"m": 0.5})
    assert "t1" in searcher._completed_trials, msg
    assert isinstance(OptunaSearch.FINISHED, str)


@pytest.mark.slow
@pytest.mark.parametrize("mode,sign", [("max", 1.0), ("min", -1.0)])
def test_asha_rungs(mode, sign):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    scheduler = AsyncHyperBandScheduler(time_attr="epoch", metric="val_accuracy", mode=mode, max_t=9, grace_period=1,
                                        reduction_factor=3)
    msg = where("rknas.search.resume.seed_rungs (AsyncHyperBandScheduler._brackets[i]._rungs, _metric_op)")
    brackets = getattr(scheduler, "_brackets", None)
    assert isinstance(brackets, list) and brackets, msg
    assert getattr(scheduler, "_metric_op", None) == sign, msg
    for bracket in brackets:
        rungs = getattr(bracket, "_rungs", None)
        assert isinstance(rungs, list) and rungs, msg
        assert all(isinstance(m, (int, float)) and isinstance(recorded, dict) for m, recorded in rungs), msg
    assert all(1 <= m <= 9 for m, _ in brackets[0]._rungs), msg  # milestones in time_attr units (epochs)


# ---- Optuna ----------------------------------------------------------------------------------
# Heartbeats are what rknas.storage.liveness uses; Optuna calls them experimental and meant for optimize().
heartbeat_warnings = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning",
                                                "ignore:Heartbeat of storage is supposed to be used with Study.optimize")


@heartbeat_warnings
def test_study_and_trial_ids_and_storage(tmp_path):
    from rknas.storage.liveness import rdb_backend

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=60, grace_period=120)
    study = optuna.create_study(storage=storage)
    msg = where("rknas.storage (liveness) and rknas.search.searcher "
                "(Study._storage, Study._study_id, Trial._trial_id, FrozenTrial._trial_id, _CachedStorage._backend)")
    assert isinstance(getattr(study, "_study_id", None), int), msg
    assert isinstance(getattr(study, "_storage", None), optuna.storages.BaseStorage), msg
    assert rdb_backend(study._storage) is storage, msg  # through Optuna's cache wrapper
    trial = study.ask()
    assert isinstance(getattr(trial, "_trial_id", None), int), msg
    (frozen,) = study.get_trials()
    assert getattr(frozen, "_trial_id", None) == trial._trial_id, msg
    assert study._storage.get_trial(trial._trial_id).number == trial.number, msg


@heartbeat_warnings
def test_rdb_models_and_sessions(tmp_path):
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=60, grace_period=120)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    trial.set_user_attr("k", 1)
    storage.record_heartbeat(trial._trial_id)
    msg = where("rknas.storage.liveness (optuna.storages._rdb models, _create_scoped_session, "
                "RDBStorage.scoped_session/_get_stale_trial_ids)")
    trials, attrs = models.TrialModel, models.TrialUserAttributeModel
    assert storage._get_stale_trial_ids(study._study_id) == [], msg  # heartbeat just recorded: not stale
    with _create_scoped_session(storage.scoped_session) as session:
        row = session.query(trials.trial_id, trials.number, trials.state, trials.study_id).filter(
            trials.trial_id == trial._trial_id).one()
        assert (row.number, row.state, row.study_id) == (0, TrialState.RUNNING, study._study_id), msg
        beating = session.query(trials.trial_id).filter(trials.study_id == study._study_id, trials.heartbeats.any())
        assert beating.count() == 1, msg
        attr = session.query(attrs.trial_id, attrs.key, attrs.value_json).one()
        assert (attr.trial_id, attr.key, json.loads(attr.value_json)) == (trial._trial_id, "k", 1), msg
        # liveness.interrupt_trials' write: state and completion time in one conditional UPDATE
        changed = session.query(trials).filter(trials.trial_id == trial._trial_id, trials.state == TrialState.RUNNING).update(
            {"state": TrialState.FAIL, "datetime_complete": datetime.datetime.now()}, synchronize_session=False)
        assert changed == 1, msg
    done = storage.get_trial(trial._trial_id)
    assert done.state == TrialState.FAIL and done.datetime_complete is not None, msg


def test_every_database_call_of_optunas_cache_is_retried():
    """Optuna wraps each RDBStorage in _CachedStorage, which calls some private methods directly."""
    import re

    from optuna.storages._cached_storage import _CachedStorage

    from rknas.storage.retry import RETRIED

    used = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_CachedStorage)))
    no_database = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "get_failed_trial_callback"}
    assert used, where("rknas.storage.retry.RETRIED (optuna.storages._cached_storage._CachedStorage)")
    missing = used - set(RETRIED) - no_database
    assert not missing, where(f"rknas.storage.retry.RETRIED: add {sorted(missing)}")
