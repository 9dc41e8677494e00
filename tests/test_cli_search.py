"""Bad input to search/best/train/studies: one line on stderr, exit 2, storage untouched."""

import hashlib
from pathlib import Path

import optuna
import pytest
import yaml


def one_line_error(code, err, fragment):
    assert code == 2, err
    assert fragment in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path):
    """A storage holding one finished study (maximize val_accuracy)."""
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="digits_quick", storage=url, direction="maximize")
    study.set_user_attr("metrics", ["val_accuracy"])
    study.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    return url, tmp_path / "s.db"


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--space", "nope"], "unknown search space 'nope'; known: cifar100_default, cifar10_bench, cifar10_default, digits_bench, digits_quick"),
        (["--space", "digits_quick", "--trials", "0"], "--trials must be at least 1"),
        (["--space", "digits_quick", "--epochs", "0"], "--epochs must be at least 1"),
        (["--space", "digits_quick", "--concurrency", "0"], "--concurrency must be at least 1"),
        (["--space", "digits_quick", "--timeout", "0"], "--timeout must be positive"),
        (["--space", "digits_quick", "--max-params", "0"], "--max-params must be positive, got 0"),
        (["--space", "digits_quick", "--max-flops", "-5"], "--max-flops must be positive, got -5"),
        (["--space", "digits_quick", "--heartbeat-interval", "0"], "--heartbeat-interval must be at least 1"),
        (["--space", "digits_quick", "--stale-after", "10"], "--stale-after (10) must be longer than --heartbeat-interval (10)"),
        (["--space", "cifar10_default"], "CIFAR-10 needs a root folder"),
        (["--space", "cifar10_default", "--data-root", "/nonexistent"], "CIFAR-10 not found under /nonexistent; download it with `rknas data download cifar10 --root /nonexistent`"),
        (["--space", "mnist_default", "--data-root", "/nonexistent"], "MNIST not found under /nonexistent"),
        (["--space", "digits_quick", "--address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
        (["--space", "digits_quick", "--address", "nonsense"], "is not HOST:PORT"),
    ],
)
def test_search_bad_input(cli, db, args, fragment):
    url, path = db
    before = digest(path)
    code, _, err = cli("search", "--storage", url, *args)
    one_line_error(code, err, fragment)
    assert digest(path) == before


def test_search_bad_space_files(cli, tmp_path, db):
    url, path = db
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data: [unclosed\n")
    code, _, err = cli("search", "--storage", url, "--space", bad_yaml)
    one_line_error(code, err, "invalid YAML at line")
    bad_key = tmp_path / "badkey.yaml"
    bad_key.write_text(yaml.safe_dump({"data": {"name": "digits"}, "framework": "resnet"}))
    code, _, err = cli("search", "--storage", url, "--space", bad_key)
    one_line_error(code, err, "badkey.yaml: framework: input should be 'cifar' or 'mnist', got 'resnet'")
    bad_strat = tmp_path / "badstrat.yaml"
    bad_strat.write_text(yaml.safe_dump({"data": {"name": "digits"}, "architecture": {"strategy": ["I", "heun9"]}}))
    code, _, err = cli("search", "--storage", url, "--space", bad_strat)
    one_line_error(code, err, "unknown stage strategy 'heun9'")


def test_search_objectives_must_match_existing_study(cli, tmp_path, db):
    url, path = db
    space = tmp_path / "mo.yaml"
    space.write_text(yaml.safe_dump({
        "name": "digits_quick", "data": {"name": "digits"},
        "objectives": [{"metric": "val_accuracy", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}],
    }))
    before = digest(path)
    code, _, err = cli("search", "--storage", url, "--space", space)
    one_line_error(code, err, "study 'digits_quick'")
    assert "use another --study name" in err and digest(path) == before


def test_search_gpus_where_cluster_has_none(cli, ray_local, db):
    url, path = db
    before = digest(path)
    code, _, err = cli("search", "--storage", url, "--space", "digits_quick", "--gpus-per-trial", "0.5", "--study", "gpu")
    one_line_error(code, err, "--gpus-per-trial 0.5 asked for, but the Ray cluster has 0 GPUs")
    assert digest(path) == before


@pytest.mark.parametrize(
    "url,fragment",
    [
        ("notaurl", "cannot open storage notaurl"),
        ("postgresql+nodriver://u@localhost/db", "cannot open storage postgresql+nodriver"),
    ],
)
def test_bad_storage_urls(cli, url, fragment):
    code, _, err = cli("search", "--space", "digits_quick", "--storage", url)
    one_line_error(code, err, fragment)


def test_storage_in_unwritable_place(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = cli("search", "--space", "digits_quick", "--storage", f"sqlite:///{blocker}/x.db")
    one_line_error(code, err, "cannot")


def test_best_and_studies_bad_input(cli, tmp_path, db):
    url, _ = db
    code, _, err = cli("best", "--study", "nope", "--storage", url)
    one_line_error(code, err, "no study 'nope' in this storage; studies: digits_quick")
    code, _, err = cli("best", "--study", "x", "--storage", f"sqlite:///{tmp_path}/missing.db")
    one_line_error(code, err, "does not exist")
    assert not (tmp_path / "missing.db").exists()
    code, _, err = cli("best", "--study", "digits_quick", "--storage", url)
    one_line_error(code, err, "has no recorded network config")
    code, out, _ = cli("studies", "--storage", url, "--json")
    assert code == 0 and '"digits_quick"' in out


def test_train_bad_input(cli, tmp_path):
    code, _, err = cli("train", "--config", tmp_path / "none.yaml")
    one_line_error(code, err, "does not exist")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"network": {"k": 8}}))
    code, _, err = cli("train", "--config", cfg)
    one_line_error(code, err, "missing section 'training'")



def test_size_limits_on_the_command_line_override_the_space(cli, tmp_path, monkeypatch):
    from rknas.search import runner

    seen = {}

    def prepare_only(opts):
        space, *_ = runner.prepare(opts)
        seen["constraints"] = space.constraints.model_dump()
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_search", prepare_only)  # the CLI imports it when a search runs
    code, _, _ = cli("search", "--space", "digits_quick", "--storage", f"sqlite:///{tmp_path}/s.db", "--max-params", "78410",
                     "--max-flops", "1e7")
    assert code == 130  # the stand-in stops the search like Ctrl-C once the options reached the space
    assert seen["constraints"] == {"max_params": 78410, "max_flops": 1e7}
