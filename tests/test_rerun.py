"""`rknas rerun`: a trial's stored configs and seed reproduce its validation accuracy exactly.

The first part builds studies by hand (trials trained in this process, recorded as the
search's adapter records them), so it needs no Ray; the second runs a real search with two
trials at once in reused workers and reruns every trial of it.
"""

import json

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from rknas.search.objective import run_trial
from rknas.search.rerun import rerun_trial, torch_threads
from rknas.search.runner import SearchOptions, load_data, run_search
from rknas.search.space import parse_space
from rknas.storage import StudyRecord, TrialRecord

SPACE = {
    "name": "rep",
    "data": {"name": "digits", "train_subset": 400, "crop_pad": 1, "flip": True},
    "framework": "cifar",
    "architecture": {"periods": 2, "strategy": ["E", "R"], "stages": {"low": 1, "high": 2}, "k": [8, 16],
                     "attention": [True, False], "dropout": 0.1},
    "training": {"lr": {"low": 0.05, "high": 1.0e5, "log": True}, "batch_size": 25, "warmup_epochs": 0},
    "fidelity": {"epochs": 2, "early_stopping": False},
    "constraints": {"max_params": 14000},
}
SMALL = {"p1_strategy": "E", "p1_stages": 2, "p1_k": 8, "p2_strategy": "E", "p2_stages": 1, "p2_k": 8,
         "attention": True, "lr": 0.2}


def add_trial(study, space, params, state, epochs=None, **changes):
    """Train ``params`` here and store the trial as the search's adapter would."""
    train, val = load_data(space)
    reports = []
    with torch_threads(1):  # as a search worker with one CPU (and faster than sharing two)
        run_trial(params, space, train, val, report=reports.append)
    history = [r["val_accuracy"] for r in reports if r["epoch"] and not r.get("failed")][:epochs]
    network, training = space.configs(params, seed=params["seed"])
    last = reports[-1]
    record = TrialRecord(val_accuracy_per_epoch=history, seed=params["seed"], network=network.model_dump(mode="json"),
                         training=training.model_dump(mode="json"), params=last.get("params"), val_loss=last.get("val_loss"),
                         device=last.get("device"), threads=last.get("threads"), fail_reason=last.get("error"),
                         constraint_violation=last.get("constraint_violation"))
    for key, value in changes.items():
        setattr(record, key, value)
    value = history[-1] if state == TrialState.COMPLETE else None
    study.add_trial(optuna.trial.create_trial(state=state, value=value, user_attrs=record.user_attrs()))


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """Trials 0 COMPLETE, 1 PRUNED after 1 of 2 epochs, 2 FAIL, 3 PRUNED untrained (too big), 4 tampered."""
    url = f"sqlite:///{tmp_path_factory.mktemp('rerun')}/h.db"
    space = parse_space(SPACE, "rep")
    load_data(space)  # fills classes, channels and image size, as the search does before recording the space
    study = optuna.create_study(study_name="hand", storage=url, direction="maximize")
    info = StudyRecord(space_name="rep", space=space.model_dump(mode="json"), metrics=["val_accuracy"])
    for key, value in info.user_attrs().items():
        study.set_user_attr(key, value)
    add_trial(study, space, {**SMALL, "seed": 0}, TrialState.COMPLETE)
    add_trial(study, space, {**SMALL, "seed": 1, "attention": False}, TrialState.PRUNED, epochs=1, val_loss=None)
    add_trial(study, space, {**SMALL, "seed": 2, "p1_strategy": "search_broken"}, TrialState.FAIL)
    add_trial(study, space, {**SMALL, "seed": 3, "p1_k": 16, "p2_k": 16, "p1_strategy": "R"}, TrialState.PRUNED)
    add_trial(study, space, {**SMALL, "seed": 4}, TrialState.COMPLETE)
    t4 = study.trials[4]
    tampered = [round(a + 0.01, 6) for a in t4.user_attrs["val_accuracy_per_epoch"]]
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=tampered[-1],
                                              user_attrs={**t4.user_attrs, "val_accuracy_per_epoch": tampered}))
    return url


@pytest.mark.slow
def test_a_complete_trial_is_reproduced_exactly(handmade):
    study = optuna.load_study(study_name="hand", storage=handmade)
    seen = []
    with torch_threads(2):  # the trial trained with 1: the rerun uses that, then restores 2
        r = rerun_trial(study, 0, on_epoch=seen.append)
        assert torch.get_num_threads() == 2
    assert {s["threads"] for s in seen} == {1} and r.threads == 1
    assert r.agree and r.recorded == r.reproduced and len(r.reproduced) == 2 and not r.notes
    assert r.reproduced_val_loss == r.recorded_val_loss is not None


def test_a_pruned_trial_reruns_its_own_epochs_on_its_schedule(handmade):
    r = rerun_trial(optuna.load_study(study_name="hand", storage=handmade), 1)
    assert r.state == "PRUNED" and len(r.recorded) == 1 and r.reproduced == r.recorded


def test_cli_json_and_exit_codes(handmade, cli):
    code, out, err = cli("rerun", "--study", "hand", "--trial", "0", "--storage", handmade, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["agree"] is True and got["recorded"] == got["reproduced"] and len(got["recorded"]) == 2
    code, out, err = cli("rerun", "--study", "hand", "--trial", "5", "--storage", handmade)
    assert code == 1, err
    assert "NOT reproduced" in out and "differs" in out


@pytest.mark.parametrize("args,fragment", [
    (["--study", "nope", "--trial", "0"], "no study 'nope' in this storage; studies: hand"),
    (["--study", "hand", "--trial", "9"], "study 'hand' has no trial 9 (trials 0..5)"),
    (["--study", "hand", "--trial", "2"], "trial 2 of study 'hand' is FAIL (stage strategy 'search_broken'"),
    (["--study", "hand", "--trial", "3"], "trial 3 of study 'hand' is PRUNED (params"),
])
def test_trials_that_cannot_be_rerun_are_one_line_exit_2(handmade, cli, args, fragment):
    code, out, err = cli("rerun", *args, "--storage", handmade)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_a_missing_storage_is_one_line_exit_2(tmp_path, cli):
    code, _, err = cli("rerun", "--study", "x", "--trial", "0", "--storage", f"sqlite:///{tmp_path}/none.db")
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


# ---- a real search -------------------------------------------------------------------------
STARTS = [  # the warm start makes the trials known: three train, the last diverges
    {"strategy": "E", "stages": [2, 1], "k": 8, "attention": True, "lr": 0.2},
    {"strategy": ["R", "E"], "stages": [2, 1], "k": [16, 8], "attention": False, "lr": 0.1},
    {"strategy": "E", "stages": 1, "k": 16, "attention": False, "lr": 0.3},
    {"strategy": "E", "stages": 1, "k": 8, "attention": True, "lr": 1.0e5},
]


@pytest.mark.slow
def test_every_trial_of_a_concurrent_search_is_reproduced(ray_local, tmp_path, cli):
    """Two trials at once, each worker reused for a second trial, then each trial rerun here
    (with another thread count than the workers', which the rerun must restore)."""
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "start_from": STARTS}))
    url = f"sqlite:///{tmp_path}/r.db"
    events = []
    res = run_search(SearchOptions(space=str(path), trials=4, storage=url, concurrency=2, cpus_per_trial=1, seed=11,
                                   on_event=lambda kind, data: events.append((kind, data))))
    assert res.finished == 4
    pids = {d["result"]["pid"] for kind, d in events if kind == "trial_result"}
    assert len(pids) < 4  # some worker ran a second trial (Tune reuses actors)
    study = optuna.load_study(study_name="rep", storage=url)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]
    assert [t.params["lr"] for t in trials] == [s["lr"] for s in STARTS]  # the warm start ran first
    records = [TrialRecord.of(t) for t in trials]
    assert {(r.device, r.threads) for r in records} == {("cpu", 1)}
    assert records[3].diverged.startswith("training diverged at epoch 1")
    assert trials[3].intermediate_values == {1: 0.0}
    torch.set_num_threads(2)  # not the workers' count
    for t in trials:
        seen = []
        r = rerun_trial(study, t.number, on_epoch=seen.append)
        assert {s["threads"] for s in seen} == {1}  # the recorded count, not this process's
        assert r.agree and r.reproduced == r.recorded, (t.number, r)
        assert r.reproduced_val_loss == r.recorded_val_loss  # bit-identical arithmetic, not just the same counts
    assert r.reproduced_diverged == records[3].diverged and r.reproduced == [0.0]
    assert torch.get_num_threads() == 2
    code, out, err = cli("rerun", "--study", "rep", "--trial", "1", "--storage", url, "--json")
    assert code == 0, err
    assert json.loads(out)["reproduced"] == records[1].val_accuracy_per_epoch
