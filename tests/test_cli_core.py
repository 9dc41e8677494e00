"""`rknas strategies` and `rknas describe`, including their bad-input behaviour."""

import json
import subprocess
import sys

import pytest


def test_describe_json_matches_paper(cli):
    code, out, _ = cli("describe", "--strategy", "I", "--stages", "5,5,6", "--k", "150,120,120", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["name"] == "RKCNN-I-5_5_6" and info["periods"] == 3
    assert info["params"] == 7_287_400 and info["flops"] == 7_305_588_600  # paper: 7.29M, 7.30G


def test_describe_mnist_and_model_name(cli):
    code, out, _ = cli("describe", "--framework", "mnist", "--strategy", "I", "--stages", "2", "--k", "32", "--json")
    assert code == 0 and json.loads(out)["params"] == 78_410
    code, out, _ = cli("describe", "--model", "rkcnn_r_3_4_4_k180", "--json")
    assert code == 0 and json.loads(out)["params"] == 8_760_250


def test_describe_table_output(cli):
    code, out, _ = cli("describe", "--strategy", "E", "--stages", "2", "--k", "8")
    assert code == 0 and "RKCNN-E-2" in out and "params" in out


def test_strategies_json(cli):
    code, out, _ = cli("strategies", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["R"]["package"] == "rknas" and rows["R"]["min_stages"] == 2


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--k", "0"], "k must be positive"),
        (["--k", "-3"], "k must be positive"),
        (["--strategy", "I", "--stages", "1"], "needs stages >= 2"),
        (["--stages", "2,2,2", "--k", "8,8"], "1 or 3 entries"),
        (["--strategy", "Q"], "unknown stage strategy 'Q'; known: E, I, R"),
        (["--image-size", "2", "--stages", "2,2,2"], "too small"),
        (["--framework", "mnist", "--image-size", "3"], "too small"),
        (["--k", "a,b"], "comma-separated list of int"),
        (["--framework", "imagenet"], "framework"),
    ],
)
def test_describe_bad_input(cli, args, fragment):
    code, out, err = cli("describe", *args)
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_describe_missing_config_file(cli, tmp_path):
    code, _, err = cli("describe", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in err


@pytest.mark.slow
def test_console_script_exit_code():
    proc = subprocess.run([sys.executable, "-m", "rknas.cli", "describe", "--k", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error:")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["describe", "--classes", "many"], "Invalid value for '--classes'"),
        (["describe", "--bogus"], "No such option: --bogus"),
        (["search"], "Missing option '--space'"),
    ],
)
def test_usage_errors_are_one_line(cli, args, fragment):
    code, _, err = cli(*args)
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1 and "rknas" in err and "--help" in err


def test_unwritable_output_path_is_one_line(cli, tmp_path):
    import yaml

    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"network": {"k": 8, "in_channels": 1, "image_size": 8}, "training": {"epochs": 1},
                                   "data": {"name": "digits"}}))
    code, _, err = cli("train", "--config", cfg, "--out", blocker / "run")
    assert code == 2 and err.startswith("error: ") and str(blocker) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b"SQLite format 3\x00" + b"\x00" * 90])
def test_a_corrupt_sqlite_file_is_one_line_exit_2(cli, tmp_path, content):
    db = tmp_path / "bad.db"
    db.write_bytes(content)
    for args in (("studies",), ("best", "--study", "x")):
        code, _, err = cli(*args, "--storage", f"sqlite:///{db}")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "cannot open storage" in err and "Traceback" not in err
    assert db.read_bytes() == content  # untouched


def test_models_with_a_pattern_that_matches_nothing_is_one_line_exit_2(cli):
    code, out, err = cli("models", "rkcnn_q_*")
    assert code == 2 and out == "" and "no named model matches 'rkcnn_q_*'" in err
    code, out, _ = cli("models", "rkcnn_i_2_mnist_k32", "--json")
    assert code == 0 and '"params": 78410' in out
