"""The study picture and parameter importances, on a synthetic study (no training, no Ray)."""

import optuna

from rknas.report import parameter_importances, plot_study
from rknas.storage import StudyRecord, TrialRecord


def synthetic_study(n=12):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for key, value in StudyRecord(metrics=["val_accuracy"]).user_attrs().items():
        study.set_user_attr(key, value)
    for _ in range(n):
        t = study.ask()
        lr = t.suggest_float("lr", 0.01, 1.0, log=True)
        k = t.suggest_int("p1_k", 8, 32)
        acc = 0.5 + 0.4 * lr  # accuracy follows lr, not k
        for key, value in TrialRecord(val_accuracy_per_epoch=[acc / 2, acc], params=100 * k).user_attrs().items():
            t.set_user_attr(key, value)
        study.tell(t, acc)
    return study


def test_importances_find_the_parameter_that_matters():
    imp = parameter_importances(synthetic_study())
    assert list(imp)[0] == "lr" and imp["lr"] > 0.8
    assert parameter_importances(synthetic_study(n=1)) == {}


def test_plot_study_writes_a_png(tmp_path):
    path = plot_study(synthetic_study(), tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
