"""The trial and study records: one definition, written and read back through Optuna."""

import optuna

from rknas.storage import StudyRecord, TrialRecord


def test_trial_record_round_trips_through_an_optuna_trial():
    study = optuna.create_study()
    trial = study.ask()
    record = TrialRecord(val_accuracy_per_epoch=[0.5, 0.7], seed=3, params=1234, network={"k": [8]},
                         pruned_at_epoch=2)
    for key, value in record.user_attrs().items():
        trial.set_user_attr(key, value)
    study.tell(trial, 0.7)
    back = TrialRecord.of(study.trials[0])
    assert back == record
    assert back.last_val_accuracy == 0.7 and not back.interrupted
    assert "fail_reason" not in study.trials[0].user_attrs  # empty fields are not written


def test_unknown_keys_are_ignored_and_study_record_reads_back():
    assert TrialRecord.from_user_attrs({"seed": 1, "written_by_someone_else": True}).seed == 1
    study = optuna.create_study()
    for key, value in StudyRecord(space_name="s", metrics=["val_accuracy"], seed=4).user_attrs().items():
        study.set_user_attr(key, value)
    got = StudyRecord.of(study)
    assert got.space_name == "s" and got.metrics == ["val_accuracy"] and got.seed == 4 and got.space is None
