"""`rknas evaluate`: finalists and named models trained from scratch with several seeds, scored on test."""

import json
import statistics

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import rknas.evaluate as ev
from rknas.config import NetworkConfig, TrainConfig
from rknas.errors import RknasError
from rknas.models.counting import count_flops, count_params
from rknas.models.network import build_network
from rknas.search.runner import load_data
from rknas.search.space import load_space
from rknas.storage import StudyRecord, TrialRecord

# Three tiny digits networks (8x8 inputs, one period); the test trains each for one epoch.
NETS = [
    {"strategy": ["E"], "stages": [1], "k": [8]},
    {"strategy": ["R"], "stages": [2], "k": [8]},
    {"strategy": ["I"], "stages": [2], "k": [16]},
]
VALS = [0.93, 0.95, 0.90]  # trial 1 is the best of the search, then 0, then 2


def network(i: int, **kw) -> dict:
    return NetworkConfig.model_validate({"framework": "cifar", "in_channels": 1, "image_size": 8, "classes": 10,
                                         "attention": False, **NETS[i], **kw}).model_dump(mode="json")


def make_study(url: str, name: str = "tiny", complete: bool = True, directions=("maximize",)) -> optuna.Study:
    """A study as `rknas search` leaves it, without running one: space record, trials with records."""
    space = load_space("digits_quick")
    load_data(space)  # fills classes, channels and image size, as the search does
    study = optuna.create_study(study_name=name, storage=url, directions=list(directions))
    metrics = ["val_accuracy", "params"][: len(directions)]
    for key, value in StudyRecord(space_name=space.name, space=space.model_dump(mode="json"), metrics=metrics,
                                  seed=0).user_attrs().items():
        study.set_user_attr(key, value)
    for i, acc in enumerate(VALS):
        net = network(i)
        model = build_network(net)
        params = count_params(model)  # the search records what it counted; evaluate reports those counts
        training = TrainConfig(epochs=6, lr=0.1 + 0.01 * i, weight_decay=1e-4, batch_size=64, warmup_epochs=0.5,
                               seed=i).model_dump(mode="json")
        record = TrialRecord(val_accuracy_per_epoch=[acc - 0.1, acc], seed=i, params=params, flops=count_flops(model),
                             network=net, training=training)
        values = [acc, params][: len(directions)]
        state = TrialState.COMPLETE if complete else TrialState.PRUNED
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 0.1}, distributions={"lr": optuna.distributions.FloatDistribution(0.01, 1.0)},
            values=values if complete else None, user_attrs=record.user_attrs(), state=state,
        ))
    return study


@pytest.fixture
def study_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    make_study(url)
    return url


@pytest.fixture
def mini_config(tmp_path):
    """A config file as `rknas best` writes one (only its network section is used)."""
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump({"network": network(0, k=[12]), "training": {"lr": 9.9}, "data": {"name": "digits"}}))
    return path


@pytest.fixture
def count_fits(monkeypatch):
    """Counts the trainings `evaluate` starts (the real training still runs)."""
    import rknas.train

    calls = []
    real = rknas.train.fit  # evaluate imports it when a run trains

    def counting_fit(network, cfg, *args, **kwargs):
        calls.append((network.name, cfg.seed, cfg.epochs))
        return real(network, cfg, *args, **kwargs)

    monkeypatch.setattr(rknas.train, "fit", counting_fit)
    return calls


@pytest.mark.slow
def test_evaluate_writes_json_plot_runs_and_the_study_summary_and_a_rerun_skips(cli, study_url, mini_config, tmp_path,
                                                                                 count_fits):
    out = tmp_path / "eval"
    args = ["evaluate", "--study", "tiny", "--storage", study_url, "--top", 2, "--include", mini_config,
            "--seeds", 2, "--epochs", 1, "--out", out]
    code, stdout, err = cli(*args)
    assert code == 0, err
    assert "Evaluating 3 model(s) x 2 seed(s)" in err and "Evaluating" not in stdout  # progress on stderr, results on stdout
    assert len(count_fits) == 6 and {c[2] for c in count_fits} == {1} and {c[1] for c in count_fits} == {0, 1}

    data = json.loads((out / "evaluation.json").read_text())
    assert [m["name"] for m in data["models"]] == ["trial_1", "trial_0", "mini"]  # finalists best first, then includes
    assert [m["source"] for m in data["models"]] == ["trial", "trial", "config"]
    assert [m.get("trial") for m in data["models"]] == [1, 0, None]
    assert data["epochs"] == 1 and data["seeds"] == [0, 1]
    assert data["data"] == {"name": "digits", "train_images": 1438, "test_images": 359}  # the whole train split
    # One recipe for all: the best trial's (trial 1) training settings; its lr, not the config file's.
    assert data["recipe"]["from_trial"] == 1 and data["recipe"]["training"]["lr"] == pytest.approx(0.11)
    for m, net in zip(data["models"], (network(1), network(0), network(0, k=[12]))):
        model = build_network(net)
        assert m["network"] == net
        assert m["params"] == count_params(model) and m["flops"] == count_flops(model)
        # Test accuracy is a count of the 359 test images: anything else means it was not scored on the test split.
        assert len(m["test_accuracy"]) == 2 and all(round(a * 359) == pytest.approx(a * 359, abs=1e-9) for a in m["test_accuracy"])
        assert m["mean"] == pytest.approx(statistics.fmean(m["test_accuracy"]))
        assert m["std"] == pytest.approx(statistics.stdev(m["test_accuracy"]))
        for seed, acc in zip((0, 1), m["test_accuracy"]):
            run = json.loads((out / "runs" / m["name"] / f"seed{seed}" / "metrics.json").read_text())
            assert run["test_accuracy"] == acc and run["epochs"] == 1 and run["seed"] == seed
            assert run["spec"]["training"]["lr"] == pytest.approx(0.11)
            assert not (out / "runs" / m["name"] / f"seed{seed}" / "checkpoint.pt").exists()
    assert (out / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "trial_1" in stdout and "mini" in stdout and "mean" in stdout

    kept = StudyRecord.of(optuna.load_study(study_name="tiny", storage=study_url)).evaluations
    assert kept is not None and len(kept) == 1
    stored = kept[0]
    assert stored["epochs"] == 1 and stored["seeds"] == [0, 1] and stored["recipe_trial"] == 1
    assert [(m["name"], m["test_accuracy"], m["mean"], m["std"], m["params"], m["flops"]) for m in stored["models"]] == [
        (m["name"], m["test_accuracy"], m["mean"], m["std"], m["params"], m["flops"]) for m in data["models"]]

    # The same command again: nothing trained, nothing rewritten, the same results.
    runs = sorted((out / "runs").rglob("metrics.json"))
    mtimes = [p.stat().st_mtime_ns for p in runs]
    count_fits.clear()
    code, stdout, err = cli(*args)
    assert code == 0, err
    assert count_fits == []
    assert [p.stat().st_mtime_ns for p in runs] == mtimes
    assert json.loads((out / "evaluation.json").read_text())["models"] == data["models"]
    assert "skipped 6" in stdout

    # A lost run is redone, alone.
    (out / "runs" / "trial_0" / "seed1" / "metrics.json").unlink()
    code, _, err = cli(*args)
    assert code == 0, err
    assert count_fits == [("RKCNN-E-1", 1, 1)]

    # Another budget in the same folder would mix runs: refused, nothing trained.
    count_fits.clear()
    code, _, err = cli(*[a if a != 1 else 2 for a in args[:-2]], "--out", out)
    assert code == 2 and "other settings" in err and "epochs 1 -> 2" in err
    assert count_fits == []


@pytest.mark.slow
def test_best_by_evaluation_exports_the_finalist_with_the_best_mean(cli, study_url, tmp_path):
    study = optuna.load_study(study_name="tiny", storage=study_url)
    summary = {"epochs": 5, "seeds": [0, 1], "recipe_trial": 1, "models": [
        {"name": "trial_1", "source": "trial", "trial": 1, "params": 9000, "flops": 1, "test_accuracy": [0.90, 0.92],
         "mean": 0.91, "std": 0.014, "architecture": "RKCNN-R-2"},
        {"name": "trial_2", "source": "trial", "trial": 2, "params": 20000, "flops": 1, "test_accuracy": [0.95, 0.97],
         "mean": 0.96, "std": 0.014, "architecture": "RKCNN-I-2"},
        {"name": "big_paper", "source": "model", "params": 10**6, "flops": 1, "test_accuracy": [0.99, 0.99],
         "mean": 0.99, "std": 0.0, "architecture": "RKCNN-E-2"},
    ]}
    for key, value in StudyRecord(evaluation=summary).user_attrs().items():
        study.set_user_attr(key, value)

    code, _, err = cli("best", "--study", "tiny", "--storage", study_url, "--by", "evaluation", "-o", tmp_path / "b.yaml")
    assert code == 0, err
    cfg = yaml.safe_load((tmp_path / "b.yaml").read_text())
    assert cfg["provenance"]["trial"] == 2  # not the search's best (1), not the named model
    assert cfg["provenance"]["evaluation"] == {"test_accuracy": [0.95, 0.97], "mean": 0.96, "std": 0.014}
    assert cfg["network"] == network(2)

    code, _, err = cli("best", "--study", "tiny", "--storage", study_url, "--by", "evaluation", "--max-params", 10000,
                       "-o", tmp_path / "small.yaml")
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "small.yaml").read_text())["provenance"]["trial"] == 1

    code, _, err = cli("best", "--study", "tiny", "--storage", study_url, "-o", tmp_path / "t.yaml")  # default: --by trial
    assert code == 0 and yaml.safe_load((tmp_path / "t.yaml").read_text())["provenance"]["trial"] == 1

    code, stdout, err = cli("report", "--study", "tiny", "--storage", study_url, "-o", tmp_path / "r.png")
    assert code == 0, err
    assert "trial_2" in stdout and "big_paper" in stdout and "0.9600" in stdout
    assert (tmp_path / "r_evaluation.png").read_bytes()[:4] == b"\x89PNG"

    for bad, why in ((["--by", "best"], "--by must be"), (["--by", "evaluation", "--trial", 0], "exclude each other"),
                     (["--by", "evaluation", "--max-params", 10], "fits the limits")):
        code, _, err = cli("best", "--study", "tiny", "--storage", study_url, *bad)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1


def test_best_by_evaluation_without_an_evaluation_says_how_to_make_one(cli, study_url):
    code, _, err = cli("best", "--study", "tiny", "--storage", study_url, "--by", "evaluation")
    assert code == 2 and "rknas evaluate --study tiny" in err


def test_finalists_top_k_pareto_and_defaults(tmp_path):
    single = make_study(f"sqlite:///{tmp_path / 's.db'}")
    assert [t.number for t in ev.select_finalists(single, top=2)] == [1, 0]
    assert [t.number for t in ev.select_finalists(single)] == [1, 0, 2]  # default: top 3
    assert [t.number for t in ev.select_finalists(single, pareto=True)] == [1]
    multi = make_study(f"sqlite:///{tmp_path / 'm.db'}", directions=("maximize", "minimize"))
    # params: trial 0 (E-1 k8) is the smallest, trial 1 the most accurate, trial 2 is dominated.
    sizes = [TrialRecord.of(t).params for t in multi.trials]
    assert sizes[0] < sizes[1] and sizes[0] < sizes[2]
    assert [t.number for t in ev.select_finalists(multi)] == [1, 0]  # default: the Pareto set
    assert [t.number for t in ev.select_finalists(multi, top=3)] == [1, 0, 2]
    # A size limit: finalists among the small trials only, and the front recomputed among them.
    limit = sizes[0]
    assert [t.number for t in ev.select_finalists(single, top=3, max_params=limit)] == [
        t.number for t in sorted(single.trials, key=lambda t: -t.value) if TrialRecord.of(t).params <= limit]
    assert [t.number for t in ev.select_finalists(multi, max_params=limit)] == [0]
    with pytest.raises(RknasError, match="has at most 1 params"):
        ev.select_finalists(single, max_params=1)


def test_finalists_are_distinct_networks(tmp_path):
    """A second trial of the best network (other lr) would repeat its runs under the one recipe."""
    study = make_study(f"sqlite:///{tmp_path / 's.db'}")
    best = study.trials[1]
    runner_up = sorted(t.value for t in study.trials)[-2]
    study.add_trial(optuna.trial.create_trial(
        params=best.params, distributions=best.distributions, values=[(best.value + runner_up) / 2],
        user_attrs=best.user_attrs))
    assert [t.number for t in ev.select_finalists(study, top=2)] == [1, 0]
    assert [t.number for t in ev.select_finalists(study, top=5)] == [1, 0, 2]


@pytest.mark.parametrize("extra,why", [
    (["--include", "rkcnn_e_2_mnist_k33"], "close matches: rkcnn_e_2_mnist_k32"),
    (["--include", "rkcnn_e_2_mnist_k32"], "expects 1x28x28 inputs, data set 'digits' has 1x8x8"),
    (["--include", "CLASSES3"], "has 3 classes, data set 'digits' has 10"),
    (["--include", "MISSING"], "does not exist"),
    (["--seeds", 0], "--seeds must be at least 1"),
    (["--epochs", 0], "--epochs must be at least 1"),
    (["--top", 0], "--top must be at least 1"),
    (["--pareto"], "exclude each other"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, study_url, tmp_path, count_fits, extra, why):
    three = tmp_path / "three.yaml"
    three.write_text(yaml.safe_dump({"network": network(0, classes=3)}))
    extra = [{"CLASSES3": three, "MISSING": tmp_path / "nope.yaml"}.get(a, a) if isinstance(a, str) else a for a in extra]
    out = tmp_path / "eval"
    code, _, err = cli("evaluate", "--study", "tiny", "--storage", study_url, "--top", 2, "--seeds", 1, "--epochs", 1,
                       "--out", out, *extra)
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and why in err, err
    assert not out.exists() and count_fits == []
    assert StudyRecord.of(optuna.load_study(study_name="tiny", storage=study_url)).all_evaluations() == []


@pytest.mark.slow
def test_planning_and_a_finished_rerun_load_neither_torch_nor_the_images(study_url, tmp_path):
    """A set that describes itself (digits) is planned from its facts; the images load when a run trains."""
    import os
    import subprocess
    import sys

    options = f"EvaluateOptions(study='tiny', storage={study_url!r}, epochs=1, seeds=2, out={str(tmp_path / 'ev')!r})"
    code = f"""
import json, sys
from rknas.evaluate import evaluate, plan_evaluation
from rknas.options import EvaluateOptions
plan = plan_evaluation({options})
seen = ["torch" in sys.modules, plan.loaded is None, str(plan.facts), len(plan.runs)]
for i, run in enumerate(plan.runs):  # every run finished earlier, as a rerun finds them
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "metrics.json").write_text(json.dumps({{"test_accuracy": 0.5 + i / 100, "spec": run.spec}}))
result = evaluate({options})  # the whole command's path: no device to find, nothing to load
seen += [result.trained, result.skipped, "torch" in sys.modules]
print(json.dumps(seen))
"""
    env = {k: v for k, v in os.environ.items() if k != "RKNAS_PLUGIN_MODULES"}  # the tests' plugin imports torch
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [False, True, "1,438 + 359 images of 1x8x8, 10 classes", 6, 0, 6, False]


def test_a_data_set_whose_description_and_images_disagree_is_refused_before_anything_is_written(
        study_url, tmp_path, monkeypatch, count_fits):
    from rknas.data import loaders
    from rknas.errors import ConfigError
    from rknas.options import EvaluateOptions

    monkeypatch.setattr(loaders, "DIGITS_IMAGES", 1796)  # describe() now claims one image too few
    out = tmp_path / "ev"
    options = EvaluateOptions(study="tiny", storage=study_url, epochs=1, seeds=1, top=1, out=out, device="cpu")
    plan = ev.plan_evaluation(options)
    assert plan.facts.train_images == 1437 and plan.loaded is None
    with pytest.raises(ConfigError, match=r"'digits' loaded as 1,438 \+ 359 images .* described as 1,437 \+ 359"):
        ev.evaluate(options)
    assert not out.exists() and count_fits == []


def test_unknown_study_and_a_study_without_complete_trials(cli, tmp_path, count_fits):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    make_study(url, name="all_pruned", complete=False)
    out = tmp_path / "eval"
    for study, why in (("nope", "no study 'nope'"), ("all_pruned", "no completed trial to evaluate")):
        code, _, err = cli("evaluate", "--study", study, "--storage", url, "--epochs", 1, "--out", out)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and count_fits == []


def _summary(out: str, epochs: int, seeds: list[int], best_trial: int, at: str) -> dict:
    models = [{"name": f"trial_{t}", "source": "trial", "trial": t, "params": 9000, "flops": 1,
               "test_accuracy": [0.9 + 0.01 * (t == best_trial)] * len(seeds), "mean": 0.9 + 0.01 * (t == best_trial),
               "std": 0.0, "architecture": "RKCNN-R-2"} for t in (1, 2)]
    return {"epochs": epochs, "seeds": seeds, "recipe_trial": 1, "out": out, "evaluated_at": at, "models": models}


def test_evaluations_are_kept_and_the_most_thorough_one_is_used(cli, study_url, tmp_path):
    study = optuna.load_study(study_name="tiny", storage=study_url)
    thorough = _summary("runs/full", 30, [0, 1, 2], best_trial=2, at="2026-12-01T10:00:00+00:00")
    quick = _summary("runs/x", 1, [0], best_trial=1, at="2026-12-02T10:00:00+00:00")
    assert ev._store_evaluation(study, thorough) is None
    assert ev._store_evaluation(study, quick) == (
        "this evaluation (1 seed, 1 epoch) is less thorough than the one in runs/full (3 seeds, 30 epochs), which "
        "`rknas best --by evaluation` and `rknas report` keep using; name this one with --evaluation 2")
    record = StudyRecord.of(optuna.load_study(study_name="tiny", storage=study_url))
    assert [e["out"] for e in record.all_evaluations()] == ["runs/full", "runs/x"]  # kept, not replaced
    assert record.chosen_evaluation()["out"] == "runs/full"
    ev._store_evaluation(study, {**quick, "epochs": 2})  # the same folder again: that entry is replaced
    assert [e["epochs"] for e in StudyRecord.of(optuna.load_study(study_name="tiny", storage=study_url)).all_evaluations()] == [
        30, 2]

    code, _, err = cli("best", "--study", "tiny", "--storage", study_url, "--by", "evaluation", "-o", tmp_path / "b.yaml")
    assert code == 0 and yaml.safe_load((tmp_path / "b.yaml").read_text())["provenance"]["trial"] == 2, err
    code, _, err = cli("best", "--study", "tiny", "--storage", study_url, "--by", "evaluation", "--evaluation", 2,
                       "-o", tmp_path / "q.yaml")
    assert code == 0 and yaml.safe_load((tmp_path / "q.yaml").read_text())["provenance"]["trial"] == 1, err
    code, _, err = cli("best", "--study", "tiny", "--storage", study_url, "--by", "evaluation", "--evaluation", 3)
    assert code == 2 and "has no evaluation 3: it has 2" in err
    code, _, err = cli("best", "--study", "tiny", "--storage", study_url, "--evaluation", 1)
    assert code == 2 and "add --by evaluation" in err
    code, out, err = cli("report", "--study", "tiny", "--storage", study_url, "-o", tmp_path / "r.png")
    assert code == 0, err
    assert "evaluation 1 of 2" in out and "also evaluation 2: 1 seed x 2 epochs" in out and "(--evaluation 2)" in out


def test_finalists_are_the_first_distinct_networks_however_many_ties_come_first(tmp_path):
    """Eleven tied trials of one network lead the ranking; the next networks are still found, read whole."""
    from rknas.storage.queries import candidates

    study = optuna.create_study(study_name="ties", storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    order = [0] * 11 + [1, 1, 2, 0]
    for n, (i, acc) in enumerate(zip(order, [0.9] * 11 + [0.8, 0.8, 0.7, 0.6])):
        record = TrialRecord(val_accuracy_per_epoch=[acc], seed=n, params=100 + n, flops=1000, network=network(i))
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 0.1}, distributions={"lr": optuna.distributions.FloatDistribution(0.01, 1.0)},
            values=[acc], user_attrs=record.user_attrs()))
    pool = candidates(study, lean=True)
    assert "network" not in pool[0].user_attrs  # a lean read, as evaluate's planning reads the study
    kept = ev._first_distinct(study, pool, 3, chunk=2)
    assert [t.number for t in kept] == [0, 11, 13]
    assert [TrialRecord.of(t).network for t in kept] == [network(0), network(1), network(2)]
    assert [t.number for t in ev._first_distinct(study, pool, 5, chunk=2)] == [0, 11, 13]  # only three networks


def test_the_note_on_training_speed_and_the_device_are_said_only_when_something_trains(capsys):
    import io

    from rich.console import Console

    from rknas.display import EvaluationProgress

    for done, device, trains in ((2, "", False), (1, "cpu", True)):
        shown = io.StringIO()
        view = EvaluationProgress(Console(file=shown), note="note: the machine is busy")
        view.start(study="s", runs=2, done=done, models=2, seeds=[0], epochs=1, out="o", recipe_trial=3, device=device)
        view.stop()
        assert ("note: the machine is busy" in capsys.readouterr().err) is trains
        assert (", on cpu;" in shown.getvalue()) is trains and "recipe of trial 3" in shown.getvalue()
