"""Safe resume: a study refuses silent changes to what its trials mean, records allowed ones,
and ASHA starts from the study's earlier learning curves."""

import hashlib
from types import SimpleNamespace

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from rknas.errors import ConfigError
from rknas.search.resume import plan_resume, seed_rungs, write_plan
from rknas.search.runner import SearchOptions, load_data, make_scheduler, run_search
from rknas.search.space import load_space, parse_space
from rknas.storage import StudyRecord, TrialRecord

SPACE = {
    "name": "tiny",
    "data": {"name": "digits", "train_subset": 300},
    "framework": "cifar",
    "architecture": {"periods": 2, "strategy": ["E", "search_dud"], "stages": 1, "k": [8, 16], "attention": False},
    "training": {"lr": 0.2, "batch_size": 25, "warmup_epochs": 0},
    "fidelity": {"epochs": 3, "min_epochs": 1, "reduction_factor": 2},
}
GOOD = {"p1_strategy": "E", "p1_k": 8, "p2_strategy": "E", "p2_k": 8}
GOOD16 = {"p1_strategy": "E", "p1_k": 16, "p2_strategy": "E", "p2_k": 16}
DUD = {"p1_strategy": "search_dud", "p1_k": 8, "p2_strategy": "search_dud", "p2_k": 8}


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def started(tmp_path):
    """A study started from SPACE with seed 0, as a search records it, with one finished trial."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    url = f"sqlite:///{tmp_path}/r.db"
    space = load_space(str(path))
    load_data(space)  # a search records the space with what the data filled in
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    write_plan(study, plan_resume("tiny", None, space, 0, False), space, 0)
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    return SimpleNamespace(path=path, url=url, db=tmp_path / "r.db", study=study)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--epochs", "5"], "study 'tiny' was started with fidelity.epochs=3; this command asks 5; nothing was run"),
        (["--seed", "4"], "study 'tiny' was started with seed=0; this command asks 4"),
        (["--no-early-stopping"], "fidelity.early_stopping=true; this command asks false"),
        (["--epochs", "5", "--seed", "1"], "started with fidelity.epochs=3, seed=0; this command asks fidelity.epochs=5, seed=1"),
    ],
)
def test_a_changed_continuation_is_refused_in_one_line_and_the_study_untouched(cli, started, args, message):
    before = digest(started.db)
    code, _, err = cli("search", "--space", started.path, "--storage", started.url, "--trials", "3", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert message in err and "--allow-changes" in err, err
    assert digest(started.db) == before


def test_a_changed_space_file_is_refused_naming_the_key(cli, started):
    started.path.write_text(yaml.safe_dump({**SPACE, "architecture": {**SPACE["architecture"], "k": [8, 16, 24]}}))
    code, _, err = cli("search", "--space", started.path, "--storage", started.url, "--trials", "3")
    assert code == 2 and "architecture.k=[8, 16]; this command asks [8, 16, 24]" in err, err


def test_what_does_not_change_a_trial_is_not_a_change(started):
    space = load_space(str(started.path))
    space.data.root = "/somewhere/else"  # another machine's data folder
    space.name = "renamed"
    space.start_from = [GOOD]  # a warm start only seeds a new study
    plan = plan_resume("tiny", started.study, space, 0, False)
    assert plan.changes == {} and plan.revision == 0 and plan.new_revision is None
    # A space recorded by an older rknas lacks fields added since: their defaults are no change.
    recorded = StudyRecord.of(started.study).space
    field = next(k for k in recorded["training"] if k not in SPACE["training"])
    del recorded["training"][field]
    started.study.set_user_attr("space", recorded)
    assert plan_resume("tiny", started.study, space, 0, False).changes == {}


def test_allowed_changes_become_revisions_and_later_runs_compare_with_the_latest(started):
    space = load_space(str(started.path))
    space.fidelity.epochs = 5
    plan = plan_resume("tiny", started.study, space, 0, True)
    assert plan.revision == 1 and plan.changes == {"fidelity.epochs": (3, 5)}
    write_plan(started.study, plan, space, 0)
    record = StudyRecord.of(started.study)
    assert record.revision == 1 and record.revisions[0]["changes"] == {"fidelity.epochs": [3, 5]}
    assert record.revisions[0]["first_trial"] == 1 and record.space["fidelity"]["epochs"] == 3  # the start is kept
    assert record.space_at(1)["fidelity"]["epochs"] == 5 and record.seed_at(1) == 0
    assert plan_resume("tiny", started.study, space, 0, False).revision == 1  # unchanged since revision 1
    back = load_space(str(started.path))
    with pytest.raises(ConfigError, match="is at space revision 1 with fidelity.epochs=5; this command asks 3"):
        plan_resume("tiny", started.study, back, 0, False)


class FakeTrial:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def curve_trial(curve, revision=0, interrupted=False, state=TrialState.PRUNED):
    attrs = TrialRecord(val_accuracy_per_epoch=curve, space_revision=revision, interrupted=interrupted).user_attrs()
    values = curve[-1] if state == TrialState.COMPLETE else None
    return optuna.trial.create_trial(state=state, value=values, params={}, distributions={}, user_attrs=attrs)


@pytest.mark.slow  # Ray's ASHA scheduler
@pytest.mark.parametrize("in_sql", [False, True])  # SQL: the lean read of four record fields
def test_seed_rungs_fills_ashas_rung_records_so_a_weak_new_trial_is_stopped(tmp_path, in_sql):
    """Pins Ray's private ASHA layout that seed_rungs writes to: ``_brackets[i]._rungs``."""
    space = parse_space({**SPACE, "fidelity": {"epochs": 4, "min_epochs": 1, "reduction_factor": 2}}, "s")
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path}/s.db" if in_sql else None)
    for t in (curve_trial([0.8, 0.85, 0.9, 0.95], state=TrialState.COMPLETE), curve_trial([0.7, 0.8]), curve_trial([0.1]),
              curve_trial([0.99], interrupted=True), curve_trial([0.99], revision=3)):
        study.add_trial(t)
    study.set_user_attr("space", space.model_dump(mode="json"))

    def weak_trial_action(scheduler):
        trial = FakeTrial("new")
        scheduler.on_trial_add(None, trial)
        return scheduler.on_trial_result(None, trial, {"epoch": 1, "val_accuracy": 0.2})

    assert weak_trial_action(make_scheduler(space)) == "CONTINUE"  # an empty rung stops nobody
    scheduler = make_scheduler(space)
    assert seed_rungs(scheduler, study, space) == 3  # interrupted and other-revision curves left out
    rungs = {milestone: recorded for milestone, recorded in scheduler._brackets[0]._rungs}
    assert rungs[1] == {"study-trial-0": 0.8, "study-trial-1": 0.7, "study-trial-2": 0.1}
    assert rungs[2] == {"study-trial-0": 0.85, "study-trial-1": 0.8} and rungs[4] == {"study-trial-0": 0.95}
    assert weak_trial_action(scheduler) == "STOP"  # below the median of the earlier trials at epoch 1


@pytest.mark.slow
def test_a_resumed_search_records_its_revision_and_asha_judges_new_trials_by_the_old(ray_local, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SPACE))
    url = f"sqlite:///{tmp_path}/r.db"
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    study.enqueue_trial(GOOD)
    study.enqueue_trial(GOOD16)
    first = run_search(SearchOptions(space=str(path), trials=2, storage=url, concurrency=1))
    assert first.finished == 2 and first.counts == {"COMPLETE": 2}

    study.enqueue_trial(DUD)
    with pytest.raises(ConfigError, match="seed=0; this command asks 5"):
        run_search(SearchOptions(space=str(path), trials=3, storage=url, concurrency=1, seed=5))
    res = run_search(SearchOptions(space=str(path), trials=3, storage=url, concurrency=1, seed=5, allow_changes=True))
    assert res.finished == 3
    study = optuna.load_study(study_name="tiny", storage=url)
    old, new = study.trials[:2], study.trials[2]
    assert [TrialRecord.of(t).space_revision for t in old] == [0, 0]
    record = TrialRecord.of(new)
    assert record.space_revision == 1 and record.seed == 5 + 2
    # The dud's first epoch is at chance, below both earlier trials at epoch 1: with the study's
    # curves in ASHA's first rung it stops there (an empty rung would let it train all 3 epochs).
    assert new.state == TrialState.PRUNED and record.pruned_at_epoch == 1
    revisions = StudyRecord.of(study).revisions
    assert len(revisions) == 1 and revisions[0]["changes"] == {"seed": [0, 5]} and revisions[0]["first_trial"] == 2
