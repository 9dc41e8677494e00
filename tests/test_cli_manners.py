"""The CLI's manners: --version, -h, readable value names in help, words that agree with numbers."""

import re

import pytest

import rknas
from rknas.display import mean_std
from rknas.util import plural


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps --help at the terminal's width


def test_version_prints_the_version_and_exits_0(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out == f"rknas {rknas.__version__}\n"


@pytest.mark.parametrize("args", [["-h"], ["search", "-h"], ["bench", "replay", "-h"], ["data", "list", "-h"]])
def test_dash_h_is_help(cli, args):
    code, out, _ = cli(*args)
    assert code == 0 and "Usage: rknas" in out


@pytest.mark.parametrize("args", [["search"], ["evaluate"], ["train"], ["best"], ["rerun"], ["bench", "replay"], ["describe"]])
def test_help_names_values_not_python_types(cli, wide, args):
    code, out, _ = cli(*args, "--help")
    assert code == 0
    lines = [ln for ln in out.splitlines() if "--help" not in ln]  # typer draws its own help flag
    assert not [ln for ln in lines if re.search(r"--[a-z-]+\s+(-\w\s+)?<(bool|str|int|float|list)", ln)], out


def test_value_names_say_what_to_give(cli, wide):
    _, out, _ = cli("bench", "replay", "--help")
    assert re.search(r"--budget\s+SECONDS", out) and re.search(r"--repeats\s+N\b", out)
    _, out, _ = cli("search", "--help")
    assert re.search(r"--timeout\s+SECONDS", out) and re.search(r"--storage\s+STORAGE", out)
    assert re.search(r"--download\s+Download", out)  # an on/off flag takes no value


def test_words_agree_with_numbers():
    assert plural(1, "epoch") == "1 epoch" and plural(3, "epoch") == "3 epochs"
    assert mean_std(0.98333, 0.0, [0.98333]) == "0.9833 (1 seed)"  # one run has no sample std
    assert mean_std(0.98, 0.0123, [0.97, 0.99]) == "0.9800 ± 0.0123"


def test_a_missing_default_study_file_says_where_it_was_looked_for(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RKNAS_STORAGE", raising=False)
    code, _, err = cli("studies")
    assert code == 2 and err.count("\n") == 1
    assert f"(no file {tmp_path}/studies/rknas.db, relative to the current folder {tmp_path})" in err
    assert "pass --storage or set RKNAS_STORAGE" in err


def test_a_study_past_its_target_says_that_trials_counts_the_study(cli, tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="digits_quick", storage=url, direction="maximize")
    for value in (0.5, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value))
    code, out, err = cli("search", "--space", "digits_quick", "--trials", "1", "--storage", url)
    assert code == 0, err
    assert ("The study already has 2 finished trials (target 1); nothing to run. --trials is the study's total, not "
            "trials to add: --trials 3 runs 1 more.") in " ".join(out.split())
    assert "Study digits_quick: 2 (more than --trials 1) finished" in out and "2/1" not in out


def test_ctrl_c_in_a_command_that_does_not_handle_it_says_interrupted_and_exits_130(cli, monkeypatch, tmp_path, capsys):
    """Typer turned a KeyboardInterrupt into a silent exit 130: the user saw nothing happen."""
    import optuna

    import rknas.storage

    def stopped(*a, **k):
        raise KeyboardInterrupt

    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="s", storage=url)
    capsys.readouterr()  # Optuna's own log line
    monkeypatch.setattr(rknas.storage, "open_study", stopped)
    code, out, err = cli("report", "--study", "s", "--storage", url, "-o", tmp_path / "r.png")
    assert (code, out, err.strip()) == (130, "", "interrupted")


def test_ctrl_c_while_typer_parses_the_command_line_says_interrupted_too(cli, monkeypatch):
    """Typer catches a KeyboardInterrupt anywhere inside it and returns 130 without a word."""
    import typer.core

    def interrupted(self, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(typer.core.TyperGroup, "invoke", interrupted)
    code, out, err = cli("strategies")
    assert (code, out, err.strip()) == (130, "", "interrupted")
