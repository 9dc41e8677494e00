"""A real Ray Tune search into a temporary SQLite study: states, resume, export, re-training."""

import json

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from rknas.cli import main
from rknas.search.runner import SearchOptions, run_search

pytestmark = pytest.mark.slow

SPACE = {
    "name": "tiny",
    "data": {"name": "digits", "train_subset": 500},
    "framework": "cifar",
    "architecture": {"periods": 2, "strategy": ["E", "search_dud", "search_broken"], "stages": {"low": 1, "high": 2}, "k": [8, 48], "attention": False},
    "training": {"lr": 0.2, "batch_size": 25, "warmup_epochs": 0},
    "fidelity": {"epochs": 3, "min_epochs": 1, "reduction_factor": 2},
    "constraints": {"max_params": 40000},
}
GOOD = {"p1_strategy": "E", "p1_stages": 2, "p1_k": 8, "p2_strategy": "E", "p2_stages": 1, "p2_k": 8}
P2 = {"p2_strategy": "E", "p2_stages": 1, "p2_k": 8}


@pytest.fixture
def space_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(SPACE))
    return p


def enqueue(url, *trials):
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize", load_if_exists=True)
    for params in trials:
        study.enqueue_trial(params)
    return study


def states(url):
    study = optuna.load_study(study_name="tiny", storage=url)
    return {t.number: t for t in study.get_trials()}


@pytest.fixture(scope="module")
def searched(ray_local, tmp_path_factory):
    """One real search of four enqueued trials (one per outcome), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("search")
    space_file = tmp / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    url = f"sqlite:///{tmp}/s.db"
    enqueue(
        url,
        GOOD,                                                  # 0: trains fully -> COMPLETE
        {"p1_strategy": "search_dud", "p1_stages": 1, "p1_k": 8, "p2_strategy": "search_dud", "p2_stages": 1, "p2_k": 8},  # 1: chance accuracy -> ASHA stops it at epoch 1
        {"p1_strategy": "search_broken", "p1_stages": 1, "p1_k": 8, **P2},  # 2: breaks the contract -> FAIL with the reason
        {"p1_strategy": "E", "p1_stages": 2, "p1_k": 48, **P2},      # 3: too many params -> never trained
    )
    events = []
    res = run_search(SearchOptions(space=str(space_file), trials=4, storage=url, concurrency=1, seed=3,
                                   on_event=lambda k, d: events.append((k, d))))
    return {"url": url, "space": space_file, "tmp": tmp, "result": res, "events": events, "trials": states(url)}


@pytest.fixture(scope="module")
def resumed(searched):
    """The same study after a killed process left a RUNNING trial (no heartbeat), continued to 5 trials.

    The orphan is given a heartbeat by the new run and recovered once it is stale (6 s of the
    database's clock): the run waits for it, as for any trial another search might still run.
    Six missed 1 s heartbeats, not two: a busy machine can delay the run's own heartbeat thread
    by a second or two, and its own live trial must never look stale.
    """
    url = searched["url"]
    study = optuna.load_study(study_name="tiny", storage=url)
    study.ask()
    enqueue(url, GOOD)
    res = run_search(SearchOptions(space=str(searched["space"]), trials=5, storage=url, concurrency=1, seed=3,
                                   heartbeat_interval=1, stale_after=6))
    return {**searched, "result": res, "trials": states(url)}


@pytest.fixture(scope="module")
def exported(resumed):
    out = resumed["tmp"] / "best.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["best", "--study", "tiny", "--storage", resumed["url"], "-o", str(out)])
    assert exc.value.code == 0
    return out


def test_search_finishes_the_requested_trials(searched):
    assert searched["result"].finished == 4 and not searched["result"].interrupted
    assert [d["state"] for k, d in searched["events"] if k == "trial_end"] == ["COMPLETE", "PRUNED", "FAIL", "PRUNED"]
    # the start says how many validation images score the trials (their accuracy's resolution)
    from rknas.search.runner import load_data
    from rknas.search.space import load_space

    [start] = [d for k, d in searched["events"] if k == "start"]
    assert start["val_images"] == len(load_data(load_space(str(searched["space"])))[1]) > 0


def test_complete_trial_records_curve_sizes_configs_and_provenance(searched):
    t = searched["trials"][0]
    assert t.state == TrialState.COMPLETE and t.value > 0.5
    assert t.user_attrs["params"] < 40000 and len(t.user_attrs["val_accuracy_per_epoch"]) == 3
    assert t.user_attrs["val_accuracy_per_epoch"][-1] == pytest.approx(t.value)
    assert t.intermediate_values[3] == pytest.approx(t.value)  # the final epoch is recorded too
    assert t.user_attrs["network"]["strategy"] == ["E", "E"] and t.user_attrs["seed"] == 3
    assert t.user_attrs["strategy_versions"]["E"].startswith("rknas ")
    assert t.user_attrs["wall_time"] > 0 and t.user_attrs["flops"] > 0


def test_early_stopped_trial_is_pruned_at_its_rung(searched):
    t = searched["trials"][1]
    assert t.state == TrialState.PRUNED and t.user_attrs["pruned_at_epoch"] == 1


def test_broken_plugin_trial_fails_with_its_reason(searched):
    t = searched["trials"][2]
    assert t.state == TrialState.FAIL
    assert "'search_broken'" in t.user_attrs["fail_reason"] and "rknas_testplugins" in t.user_attrs["fail_reason"]


def test_oversized_trial_is_pruned_untrained(searched):
    t = searched["trials"][3]
    assert t.state == TrialState.PRUNED and "max_params" in t.user_attrs["constraint_violation"]
    assert "wall_time" not in t.user_attrs  # never trained


def test_resume_marks_a_stale_running_trial_and_continues(resumed, searched):
    t = resumed["trials"]
    assert resumed["result"].finished == 5 and len(t) == 6
    assert t[4].state == TrialState.FAIL and t[4].user_attrs["interrupted"] is True
    assert t[5].state == TrialState.COMPLETE and t[5].user_attrs["seed"] == 3 + 5
    for n, before in searched["trials"].items():  # earlier results untouched
        assert (t[n].state, t[n].values) == (before.state, before.values)


def test_a_finished_study_runs_nothing(resumed):
    res = run_search(SearchOptions(space=str(resumed["space"]), trials=5, storage=resumed["url"]))
    assert res.started_now == 0 and len(states(resumed["url"])) == 6


def test_best_exports_the_most_accurate_trial(resumed, exported):
    t = resumed["trials"]
    cfg = yaml.safe_load(exported.read_text())
    best = max((t[0], t[5]), key=lambda x: x.value)
    assert cfg["provenance"]["trial"] == best.number and cfg["network"]["k"] == [8, 8]
    assert cfg["provenance"]["values"]["val_accuracy"] == pytest.approx(best.value)


def test_exported_config_trains_reproducibly(exported, tmp_path):
    """Same file, same seed -> identical weights and accuracy."""
    runs = []
    for name in ("a", "b"):
        with pytest.raises(SystemExit) as exc:
            main(["train", "--config", str(exported), "--epochs", "2", "--out", str(tmp_path / name)])
        assert exc.value.code == 0
        runs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    assert runs[0]["test_accuracy"] == runs[1]["test_accuracy"] > 0.5
    wa = torch.load(tmp_path / "a" / "model.pt")["model"]
    wb = torch.load(tmp_path / "b" / "model.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_train_says_which_exported_data_settings_apply(exported, cli, tmp_path):
    """The search's split settings do not apply to final training, and the command says so."""
    code, out, _ = cli("train", "--config", exported, "--epochs", "1", "--out", tmp_path / "c")
    assert code == 0
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert metrics["data"]["ignored"]["train_subset"] == 500 and metrics["train_images"] > 500
    assert "the search's split settings do not apply" in out and "train_subset=500" in out


def test_report_draws_the_study(resumed, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--study", "tiny", "--storage", resumed["url"], "-o", str(tmp_path / "r.png")])
    assert exc.value.code == 0 and (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_describe_reads_the_exported_config(exported, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["describe", str(exported), "--json"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)["params"] < 40000


def test_multi_objective_pareto_and_choice(ray_local, tmp_path, capsys):
    space = {**SPACE, "architecture": {**SPACE["architecture"], "strategy": ["E"]},
             "objectives": [{"metric": "val_accuracy", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}],
             "constraints": {}, "fidelity": {"epochs": 2, "min_epochs": 1, "early_stopping": False}}
    path = tmp_path / "mo.yaml"
    path.write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path}/mo.db"
    study = optuna.create_study(study_name="mo", storage=url, directions=["maximize", "minimize"])
    for k in (8, 48):
        study.enqueue_trial({"p1_stages": 2, "p1_k": k, "p2_stages": 1, "p2_k": 8})
    res = run_search(SearchOptions(space=str(path), study="mo", trials=2, storage=url, concurrency=2))
    assert res.finished == 2
    study = optuna.load_study(study_name="mo", storage=url)
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in study.trials)
    small = min(study.trials, key=lambda t: t.values[1])
    out = tmp_path / "pick.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["best", "--study", "mo", "--storage", url, "-o", str(out), "--max-params", str(small.values[1])])
    assert exc.value.code == 0
    assert "Pareto set" in capsys.readouterr().err
    assert yaml.safe_load(out.read_text())["provenance"]["trial"] == small.number


def test_ctrl_c_stops_gracefully_and_the_same_command_continues(tmp_path, monkeypatch):
    """A separate process with its own Ray, interrupted like a user would, then resumed.

    Trial 1 waits for a file the test creates only after the interrupt, so the search is
    always interrupted with one trial finished and one in flight, whatever the machine's speed.
    The held trial is the study's last: the driver has already stopped asking for trials
    (admission said "busy") when Ctrl-C arrives, and the Ctrl-C must still stop it.
    """
    import signal
    import subprocess
    import sys
    import time

    space_file = tmp_path / "gated.yaml"
    space_file.write_text(yaml.safe_dump({**SPACE, "architecture": {**SPACE["architecture"], "strategy": ["E", "search_gate"]}}))
    gate = tmp_path / "gate"
    monkeypatch.setenv("RKNAS_TEST_GATE", str(gate))
    url = f"sqlite:///{tmp_path}/int.db"
    held = {"p1_strategy": "search_gate", "p1_stages": 1, "p1_k": 8, **P2}
    enqueue(url, GOOD, held, GOOD)
    cmd = [sys.executable, "-m", "rknas.cli", "search", "--space", str(space_file), "--trials", "2",
           "--storage", url, "--concurrency", "2", "--study", "tiny"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def held_trial_running():
        try:
            t = states(url)
        except Exception:  # the search has not created its tables yet
            return False
        return len(t) >= 2 and t[0].state == TrialState.COMPLETE and t[1].state == TrialState.RUNNING

    deadline = time.time() + 600  # a guard against a hang, not a timing assumption
    while not held_trial_running():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-2000:] if proc.stderr else ""
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command to continue" in err
    t = states(url)
    assert not any(x.state == TrialState.RUNNING for x in t.values())  # nothing left dangling
    assert t[0].state == TrialState.COMPLETE
    assert t[1].state == TrialState.FAIL and t[1].user_attrs["interrupted"] is True
    gate.touch()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    t2 = states(url)
    finished = [x for x in t2.values() if x.state.is_finished() and not x.user_attrs.get("interrupted")]
    assert len(finished) == 2  # the interrupted trial is recorded but does not count
    assert t2[1].user_attrs["interrupted"] is True
    assert t2[0].value == t[0].value  # earlier results untouched


def test_a_worker_that_dies_is_a_fail_and_the_search_goes_on(ray_local, tmp_path):
    space = {**SPACE, "architecture": {**SPACE["architecture"], "strategy": ["E", "search_crash"]},
             "fidelity": {"epochs": 1, "early_stopping": False}, "constraints": {}}
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path}/c.db"
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    study.enqueue_trial({"p1_strategy": "search_crash", "p1_stages": 1, "p1_k": 8, **P2})
    study.enqueue_trial(GOOD)
    res = run_search(SearchOptions(space=str(path), study="tiny", trials=2, storage=url, concurrency=1))
    t = states(url)
    assert res.finished == 2 and not res.interrupted
    assert t[0].state == TrialState.FAIL and t[0].user_attrs["fail_reason"].startswith("the trial's worker crashed")
    assert t[1].state == TrialState.COMPLETE
    assert res.failed_outside_training is None  # one trial trained: the search did its job


def test_a_search_whose_every_trial_failed_outside_training_exits_1_in_one_line(ray_local, tmp_path, cli):
    """A study of worker deaths is not a finished search: the command says why, and fails."""
    space = {**SPACE, "architecture": {**SPACE["architecture"], "strategy": ["search_crash"]},
             "fidelity": {"epochs": 1, "early_stopping": False}, "constraints": {}}
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path}/c.db"
    code, out, err = cli("search", "--space", path, "--study", "tiny", "--trials", "1", "--storage", url,
                         "--concurrency", "1", "--max-retries", "0")
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: every trial this run recorded failed outside training (worker, node or storage): "
                               "the trial's worker crashed"), lines[0]
    assert [t.state for t in states(url).values()] == [TrialState.FAIL]


MO_SPACE = {**SPACE, "architecture": {**SPACE["architecture"], "strategy": ["E"], "k": [8, 16]},
            "objectives": [{"metric": "val_accuracy", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}],
            "constraints": {}, "fidelity": {"epochs": 1, "early_stopping": False}, "sampler": "nsga2"}


def test_multi_objective_search_from_the_command_line(ray_address, tmp_path):
    """`rknas search` in its own process on a two-objective space: NSGA-II's sampler is live state
    Tune cannot pickle (Optuna 5.1 gave it a lock); the search must not need it to. The process
    joins the tests' Ray with --address, as a driver joins a cluster."""
    import subprocess
    import sys

    path = tmp_path / "mo.yaml"
    path.write_text(yaml.safe_dump(MO_SPACE))
    url = f"sqlite:///{tmp_path}/mo.db"
    cmd = [sys.executable, "-m", "rknas.cli", "search", "--space", str(path), "--study", "mo", "--trials", "2",
           "--storage", url, "--concurrency", "1", "--address", ray_address]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="mo", storage=url)
    assert len(study.directions) == 2
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert all(len(t.values) == 2 for t in study.trials)


class _LockedSampler(optuna.samplers.TPESampler):
    """A sampler that cannot be pickled, as any plugin's or a future Optuna's might."""

    def __init__(self, **kwargs):
        import threading

        super().__init__(**kwargs)
        self.lock = threading.Lock()
        self.asked = 0

    def sample_relative(self, study, trial, search_space):
        with self.lock:
            self.asked += 1
        return super().sample_relative(study, trial, search_space)


def test_a_sampler_that_cannot_be_pickled_still_searches(ray_local, tmp_path, monkeypatch):
    import pickle

    from rknas.search import runner

    samplers = []

    def locked(space, seed):
        samplers.append(_LockedSampler(seed=seed, n_startup_trials=1))
        return samplers[-1]

    with pytest.raises(TypeError):
        pickle.dumps(_LockedSampler())
    monkeypatch.setattr(runner, "_sampler", locked)
    space = {**SPACE, "architecture": {**SPACE["architecture"], "strategy": ["E"]}, "constraints": {},
             "fidelity": {"epochs": 1, "early_stopping": False}}
    path = tmp_path / "locked.yaml"
    path.write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path}/l.db"
    res = run_search(SearchOptions(space=str(path), study="locked", trials=2, storage=url, concurrency=1))
    assert res.finished == 2 and not res.interrupted
    assert samplers and samplers[-1].asked >= 2  # the live sampler proposed the trials
    study = optuna.load_study(study_name="locked", storage=url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


def test_racing_runs_the_leader_again_on_a_new_seed_and_best_exports_the_mean(ray_local, tmp_path, capsys):
    """racing: 2. The first trial (the space's warm start) leads on one run, so its configuration
    runs again (a trial of its own, the same parameters, its own seed, every epoch despite ASHA);
    `best` exports it by the mean of both runs and says so."""
    space_file = tmp_path / "race.yaml"
    warm = {"strategy": "E", "stages": [2, 1], "k": 8}  # GOOD, as a start_from entry
    space_file.write_text(yaml.safe_dump({**SPACE, "racing": 2, "start_from": [warm]}))
    url = f"sqlite:///{tmp_path}/race.db"
    events = []
    res = run_search(SearchOptions(space=str(space_file), study="tiny", trials=3, storage=url, concurrency=1, seed=5,
                                   on_event=lambda k, d: events.append((k, d))))
    assert res.finished == 3
    t = states(url)
    first, repeat = t[0], t[1]
    assert first.state == repeat.state == TrialState.COMPLETE and repeat.params == first.params == GOOD
    assert repeat.user_attrs["repeat_of"] == 0 and repeat.user_attrs["repeat"] == 1
    assert (first.user_attrs["seed"], repeat.user_attrs["seed"]) == (5, 6)  # seed + trial number: a new seed
    assert len(repeat.user_attrs["val_accuracy_per_epoch"]) == SPACE["fidelity"]["epochs"]
    assert ("trial_repeat", {"number": 0, "repeat_of": 0, "repeat": 1}) in events
    mean = (first.value + repeat.value) / 2
    leads = [d for k, d in events if k == "incumbent"]
    assert leads[0] == {"number": 0, "value": first.value, "runs": 1}
    assert leads[1] == {"number": 0, "value": pytest.approx(mean), "runs": 2}
    out = tmp_path / "best.yaml"
    with pytest.raises(SystemExit) as exc:
        main(["best", "--study", "tiny", "--storage", url, "-o", str(out)])
    assert exc.value.code == 0
    assert f"val accuracy {mean:.4f} (mean of 2 seeds)" in capsys.readouterr().err
    runs = yaml.safe_load(out.read_text())["provenance"]["runs"]
    assert runs["trials"] == [0, 1] and runs["seeds"] == [5, 6] and runs["mean"] == pytest.approx(mean)
    from rknas.search.rerun import rerun_trial

    again = rerun_trial(optuna.load_study(study_name="tiny", storage=url), 1)  # a repeat reproduces like any trial
    assert again.agree and again.reproduced == again.recorded
