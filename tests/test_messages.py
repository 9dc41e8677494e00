"""Messages in rknas's voice: the file, the key, what was expected, a close match; no validator internals."""

import os
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest
import yaml

from rknas import plugins

BAD_SPACE = {
    "name": "bad", "data": {"name": "digits"},
    "architecture": {"periods": 2, "strategy": ["E"], "stages": 1, "k": [8, 16], "attention": False},
    "training": {"lr": {"low": 0.3, "high": 0.02}, "batch_sise": 25},
}


def test_a_space_file_error_names_the_file_the_key_and_a_close_match(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(BAD_SPACE))
    code, out, err = cli("search", "--space", path, "--storage", f"sqlite:///{tmp_path}/s.db")
    assert code == 2 and out == ""  # nothing drawn before the refusal
    assert err == (f"error: {path}: training.batch_sise: not a setting, did you mean batch_size?; "
                   "training.lr: low (0.3) must be <= high (0.02)\n")
    assert not (tmp_path / "s.db").exists()


def test_a_value_no_alternative_takes_says_what_would_fit(cli, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BAD_SPACE, "training": {"batch_size": {"low": "x"}}}))
    code, _, err = cli("search", "--space", path, "--storage", f"sqlite:///{tmp_path}/s.db")
    assert code == 2 and err.startswith(f"error: {path}: training.batch_size") and err.count("\n") == 1
    assert "function-after" not in err and "[" not in err.split("got")[0], err


def test_describe_of_a_file_that_is_no_network_names_the_file_and_the_known_settings(cli, tmp_path):
    path = tmp_path / "space_by_mistake.yaml"
    path.write_text("name: x\ndescription: y\n")
    code, _, err = cli("describe", path)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {path}: a network (framework, strategy, stages, k, ...) or a config from `rknas best`: "
                          "name, description: not settings (known: attention, classes, dropout, framework, ")


def test_a_config_for_training_names_its_section(cli, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"network": {"strategy": ["E"], "stages": [1], "k": [8]},
                                    "training": {"epochs": 1, "optimiser": "sgd"}, "data": {"name": "digits"}}))
    code, _, err = cli("train", "--config", path, "--out", tmp_path / "run")
    assert code == 2 and err == f"error: {path}: training: optimiser: not a setting, did you mean optimizer?\n"


def test_an_unknown_name_in_rknas_plugins_is_a_warning_naming_what_is_installed(monkeypatch, capsys):
    monkeypatch.setenv("RKNAS_PLUGINS", "rknas-baselines, nonexistent")
    monkeypatch.setattr(plugins, "load_errors", [])
    plugins._warn_unknown_wanted([EntryPoint(name="rknas_baselines", value="x:y", group="rknas")])
    err = capsys.readouterr().err
    assert err == ("warning: RKNAS_PLUGINS names 'nonexistent', which no installed plugin is (installed: rknas_baselines); "
                   "that name loads nothing\n")
    monkeypatch.setenv("RKNAS_PLUGINS", "rknas-baselines")
    plugins._warn_unknown_wanted([EntryPoint(name="rknas_baselines", value="x:y", group="rknas")])
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_the_warning_reaches_a_user_of_the_command_line():
    run = subprocess.run([sys.executable, "-m", "rknas.cli", "strategies"], capture_output=True, text=True,
                         env={**os.environ, "RKNAS_PLUGINS": "nonexistent"})
    assert run.returncode == 0 and "warning: RKNAS_PLUGINS names 'nonexistent'" in run.stderr
