"""`rknas search --table`: trials answered from a benchmark table, everything else the real search."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from rknas.bench.tableview import Snapper, load_bench
from rknas.errors import ConfigError
from rknas.search.space import load_space
from rknas.search.table_trials import open_table, run_table_trial

EPOCHS = 4


@pytest.fixture(scope="module")
def table(synthetic_table):
    return synthetic_table[0]


@pytest.fixture(scope="module")
def bench(table):
    return load_bench(table)


class FakeTime:
    """A clock that advances only when slept on, so the test sees exactly the waits asked for."""

    def __init__(self):
        self.now, self.waits = 100.0, []

    def sleep(self, s):
        self.waits.append(s)
        self.now += s

    def clock(self):
        return self.now


def _trial(bench, arch, seed, space, scale=0.5, extra=None):
    config = {**bench.sampled[arch], "seed": seed, **(extra or {})}
    reports, t = [], FakeTime()
    last = run_table_trial(config, space, bench, reports.append, time_scale=scale, label="t.db", sleep=t.sleep, clock=t.clock)
    return reports, last, t


def test_a_trial_plays_out_one_recorded_run_of_its_architecture_at_scaled_times(bench, bench_space):
    reports, last, t = _trial(bench, 3, seed=11, space=bench_space, scale=0.5)
    curves = [list(map(float, val)) for val, _ in bench.curves[3]]
    got = [r["val_accuracy"] for r in reports]
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4] and got in curves
    pick = curves.index(got)
    wall = bench.curves[3][pick][1]
    assert t.waits == pytest.approx(list(np.diff(np.concatenate([[0.0], wall])) * 0.5))
    assert last["wall_time"] == pytest.approx(float(wall[-1]) * 0.5) and last["params"] == int(bench.params[3])
    assert last["table_run"] == f"t.db arch 3 run {pick}"
    # The trial's seed decides the run: the same seed, the same run.
    assert [r["val_accuracy"] for r in _trial(bench, 3, seed=11, space=bench_space)[0]] == got
    picks = {curves.index([r["val_accuracy"] for r in _trial(bench, 3, seed=s, space=bench_space)[0]]) for s in range(20)}
    assert picks == {0, 1}


def test_a_racing_repeat_plays_another_recorded_run_than_its_configurations_first(bench, bench_space):
    """A repeat is a new training run: in a table, the run after the one its first trial played."""
    import optuna

    from rknas.search.runner import first_seed
    from rknas.storage.racing import REPEAT_CONFIG_KEY

    for seed in range(6):
        first = _trial(bench, 3, seed=seed, space=bench_space)[0][-1]["table_run"]
        again = _trial(bench, 3, seed=seed, space=bench_space)[0][-1]["table_run"]
        repeat = _trial(bench, 3, seed=100 + seed, space=bench_space,
                        extra={REPEAT_CONFIG_KEY: {"first_seed": seed, "repeat": 1}})[0][-1]["table_run"]
        assert first == again and repeat != first and repeat.startswith("t.db arch 3 run ")  # the same architecture
    # the search hands a repeat its configuration's first seed from the study's record
    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"seed": 42}))
    assert first_seed(study, 0, base_seed=7) == 42 and first_seed(study, 5, base_seed=7) == 12


def test_a_proposal_off_the_table_is_answered_by_its_nearest_architecture(bench, bench_space):
    config = {**bench.sampled[5], "p1_k": bench.sampled[5]["p1_k"] + 1}
    assert Snapper(bench).find(config) == 5
    reports, _, _ = _trial(bench, 5, seed=0, space=bench_space, extra={"p1_k": config["p1_k"]})
    assert reports[-1]["table_run"].startswith("t.db arch 5 ")


def test_an_architecture_whose_runs_all_failed_fails_after_its_recorded_time(bench, bench_space):
    reports, last, t = _trial(bench, 59, seed=0, space=bench_space, scale=2.0)
    assert len(reports) == 1 and last["failed"] == 1 and "every run of this architecture in the table failed" in last["error"]
    assert t.waits == [pytest.approx(bench.failed[59][0][0] * 2.0)]


def test_a_network_over_the_size_limit_is_refused_untrained_as_in_a_real_search(bench, bench_space):
    arch = int(np.argmax(bench.params))
    space = bench_space.model_copy(deep=True)
    space.constraints.max_params = int(bench.params[arch]) - 1
    reports, last, t = _trial(bench, arch, seed=0, space=space)
    assert [r["epoch"] for r in reports] == [0] and last["constraint_violation"] and t.waits == []


def test_a_table_of_another_space_or_other_epochs_is_refused_in_one_line(table, bench_space):
    other = load_space("digits_quick")
    with pytest.raises(ConfigError, match=r"was built for space 'fashion_mnist_bench', not 'digits_quick' \(p2_k, .* only in "
                                          r"space 'digits_quick'\)") as exc:
        open_table(table, other)
    assert "\n" not in str(exc.value)
    three = bench_space.model_copy(deep=True)
    three.fidelity.epochs = 3
    with pytest.raises(ConfigError, match="the table recorded 4 epochs per run, the space trains 3; give --epochs 4"):
        open_table(table, three)


def test_bad_tables_are_one_line_exit_2_and_no_study_is_written(cli, table, tmp_path):
    db = tmp_path / "s.db"
    for args in (["--space", "digits_quick"], ["--space", "fashion_mnist_bench", "--epochs", "3"],
                 ["--space", "fashion_mnist_bench", "--epochs", str(EPOCHS), "--table", str(tmp_path / "none.db")]):
        full = ["search", *args, "--trials", "2", "--storage", f"sqlite:///{db}"]
        if "--table" not in args:
            full += ["--table", str(table)]
        code, out, err = cli(*full)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not db.exists()


@pytest.mark.slow
def test_a_table_backed_search_runs_tune_asha_and_the_study_as_a_real_one(ray_local, table, bench, tmp_path):
    from rknas.search.runner import SearchOptions, run_search
    from rknas.storage import TrialRecord

    url = f"sqlite:///{tmp_path}/s.db"
    events = []
    result = run_search(SearchOptions(space="fashion_mnist_bench", epochs=EPOCHS, table=table, time_scale=0.01, trials=16,
                                      storage=url, seed=1, on_event=lambda k, d: events.append((k, d))))
    assert result.finished == 16
    start = next(d for k, d in events if k == "start")
    assert start["table"] == f"table {table} (recorded times x0.01)"
    trials = [t for t in optuna.load_study(study_name="fashion_mnist_bench", storage=url).trials if t.state.is_finished()]
    states = {t.state for t in trials}
    assert TrialState.COMPLETE in states and TrialState.PRUNED in states  # ASHA stopped some, as in a real search
    for t in trials:
        record = TrialRecord.of(t)
        arch = int(record.table_run.split(" arch ")[1].split()[0])
        run = int(record.table_run.rsplit(" run ", 1)[1])
        curve = [float(v) for v in bench.curves[arch][run][0]]
        assert record.val_accuracy_per_epoch == curve[: len(record.val_accuracy_per_epoch)]  # the table's numbers
        assert record.params == int(bench.params[arch]) and record.network is not None
        if t.state == TrialState.COMPLETE:
            assert t.value == curve[-1] and len(record.val_accuracy_per_epoch) == EPOCHS


def test_a_search_with_a_sampler_window_runs_through_tunes_searcher_in_rounds(ray_local, table, tmp_path, monkeypatch):
    """Ray Tune's Optuna searcher accepts only Optuna samplers: the windowed one is one. Tune
    runs of at most ROUND_TRIALS trials follow each other until the study holds its trials,
    none lost or run twice at a round's end."""
    import yaml

    from rknas.search import runner
    from rknas.search.runner import SearchOptions, run_search

    monkeypatch.setattr(runner, "ROUND_TRIALS", 5)
    rounds = []
    real_round = runner._tune_round
    monkeypatch.setattr(runner, "_tune_round", lambda *a, **k: (rounds.append(1), real_round(*a, **k))[1])

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "fashion_mnist_bench.yaml").read_text())
    space_file = tmp_path / "windowed.yaml"
    space_file.write_text(yaml.safe_dump({**raw, "sampler": "tpe", "sampler_window": 10}))
    url = f"sqlite:///{tmp_path}/w.db"
    result = run_search(SearchOptions(space=str(space_file), epochs=EPOCHS, table=table, time_scale=0.01, trials=14,
                                      storage=url, seed=2))
    assert result.finished == 14
    trials = optuna.load_study(study_name="fashion_mnist_bench", storage=url).trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) and len(trials) == 14
    assert len(rounds) == 3 and result.started_now == 14  # 5 + 5 + 4


def test_a_search_keeps_a_large_studys_importances_as_it_ends_and_its_report_reuses_them(ray_local, table, tmp_path,
                                                                                        monkeypatch):
    """fANOVA on a finished ten-thousand-trial study is most of its first report's time: the search
    computes it once as it ends, where it costs seconds of hours."""
    from rknas import importance, report
    from rknas.search.runner import SearchOptions, run_search
    from rknas.storage import StudyRecord

    monkeypatch.setattr(importance, "KEPT_FROM", 2)
    url = f"sqlite:///{tmp_path}/k.db"
    result = run_search(SearchOptions(space="fashion_mnist_bench", epochs=EPOCHS, table=table, time_scale=0.01,
                                      trials=8, storage=url, seed=3))
    assert result.finished == 8
    study = optuna.load_study(study_name="fashion_mnist_bench", storage=url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    kept = StudyRecord.of(study).importances
    assert kept is not None and kept["complete"] == len(complete) >= 2
    assert kept["values"] == importance.parameter_importances(study) != {}

    def not_again(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr(report, "parameter_importances", not_again)
    monkeypatch.setattr(importance, "_can_fork", lambda: False)
    assert report.study_picture(study).importances == kept["values"]
