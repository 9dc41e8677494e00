"""`--device` is checked before anything is written: unknown or absent devices are one line, exit 2."""

import pytest
import yaml

import rknas.util
from rknas.errors import ConfigError
from rknas.util import usable_device


@pytest.fixture
def cpu_only(monkeypatch):
    """A machine whose torch sees the CPU only, whatever this one has."""
    monkeypatch.setattr(rknas.util, "devices_here", lambda: ["cpu"])


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(rknas.util, "devices_here", lambda: ["cpu", "cuda:0", "cuda:1"])


@pytest.mark.parametrize("device", ["cpu", "CPU", "cuda", "cuda:0", "cuda:1"])
def test_a_device_this_machine_has_is_taken_as_given(two_gpus, device):
    assert usable_device(device) == device


def test_no_device_means_the_default(monkeypatch):
    monkeypatch.setattr(rknas.util, "default_device", lambda: "cpu")
    assert usable_device(None) == "cpu"


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cpu:1", "tpu", "cuda:"])
def test_an_unknown_device_names_the_known_types_and_this_machines(cpu_only, device):
    with pytest.raises(ConfigError) as exc:
        usable_device(device)
    assert str(exc.value) == (f"--device {device!r} is not a device rknas can train on: use cpu, cuda, cuda:N, mps or xpu:N "
                              "(this machine has cpu)")


def test_a_missing_gpu_is_one_line_naming_what_is_here(cpu_only):
    import torch

    with pytest.raises(ConfigError) as exc:
        usable_device("cuda")
    assert str(exc.value) == f"--device cuda: this machine has no CUDA device (torch {torch.__version__} sees cpu); choose one of those"


def test_a_gpu_index_past_the_last_is_refused(two_gpus):
    with pytest.raises(ConfigError, match=r"^--device cuda:2: this machine has no cuda:2 \(torch \S+ sees cpu, cuda:0, cuda:1\)"):
        usable_device("cuda:2")


def test_this_machines_devices_start_with_the_cpu():
    assert rknas.util.devices_here()[0] == "cpu"


def _config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"network": {"strategy": ["E"], "stages": [1], "k": [8], "in_channels": 1, "image_size": 8},
                                 "training": {"epochs": 1}, "data": {"name": "digits"}}))
    return p


@pytest.mark.parametrize("device", ["cuda", "gpu"])
def test_train_refuses_before_creating_its_folder(cli, cpu_only, tmp_path, device):
    out = tmp_path / "runs" / "x"
    code, stdout, err = cli("train", "--config", _config(tmp_path), "--device", device, "--out", out, "--epochs", "1")
    assert code == 2 and err.startswith(f"error: --device {device if device == 'cuda' else repr(device)}") and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_evaluate_refuses_before_anything(cli, cpu_only, tmp_path):
    out = tmp_path / "ev"
    code, _, err = cli("evaluate", "--study", "nowhere", "--storage", f"sqlite:///{tmp_path}/s.db", "--epochs", "1",
                       "--device", "cuda", "--out", out)
    assert code == 2 and err.startswith("error: --device cuda: this machine has no CUDA device") and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "s.db").exists()


def test_rerun_refuses_before_loading_anything(cli, cpu_only, tmp_path):
    code, _, err = cli("rerun", "--study", "nowhere", "--storage", f"sqlite:///{tmp_path}/s.db", "--trial", "0",
                       "--device", "cuda:1")
    assert code == 2 and err.startswith("error: --device cuda:1: this machine has no CUDA device") and err.count("\n") == 1


def test_train_shows_epochs_of_a_total_on_stderr_and_nothing_before_its_checks_pass(cli, tmp_path):
    code, out, err = cli("train", "--config", _config(tmp_path), "--epochs", "2", "--out", tmp_path / "run", "--device", "cpu")
    assert code == 0, err
    assert "training" in err and "2/2 epochs" in err and "train loss" in err and "train accuracy" in err and "ETA" in err
    assert "2/2 epochs" not in out and "test accuracy" in out  # the bar on stderr, the result on stdout
    code, out, err = cli("train", "--config", _config(tmp_path), "--out", tmp_path / "run", "--device", "cpu")
    assert code == 2 and out == "" and err.startswith("error: ") and "checkpoint.pt exists" in err
    assert err.count("\n") == 1, err  # refused before any bar was drawn: the error line is all there is


def test_train_uses_the_threads_asked_for_records_them_and_restores_the_count(cli, tmp_path, monkeypatch):
    import json

    import torch

    monkeypatch.delenv("RKNAS_THREADS", raising=False)  # the suite sets it (conftest): the default is checked here
    before = torch.get_num_threads()
    code, _, err = cli("train", "--config", _config(tmp_path), "--epochs", "1", "--out", tmp_path / "one", "--threads", "1",
                       "--device", "cpu")
    assert code == 0, err
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert (metrics["threads"], metrics["device"]) == (1, "cpu") and torch.get_num_threads() == before
    code, _, err = cli("train", "--config", _config(tmp_path), "--epochs", "1", "--out", tmp_path / "all", "--device", "cpu")
    assert code == 0 and json.loads((tmp_path / "all" / "metrics.json").read_text())["threads"] == rknas.util.cpus_here()
    assert cli("train", "--config", _config(tmp_path), "--threads", "0")[2].startswith("error: --threads must be at least 1")
    monkeypatch.setenv("RKNAS_THREADS", "1")  # the default when --threads is not given
    code, _, err = cli("train", "--config", _config(tmp_path), "--epochs", "1", "--out", tmp_path / "env", "--device", "cpu")
    assert code == 0 and json.loads((tmp_path / "env" / "metrics.json").read_text())["threads"] == 1
    for bad in ("0", "two", "\u00b2"):  # '²' is a digit to str.isdigit, not to int()
        monkeypatch.setenv("RKNAS_THREADS", bad)
        code, out, err = cli("train", "--config", _config(tmp_path), "--out", tmp_path / "bad", "--device", "cpu")
        assert code == 2 and err.startswith("error: RKNAS_THREADS must be a whole number") and err.count("\n") == 1, err
        assert not (tmp_path / "bad").exists()  # refused before the run folder was made


@pytest.mark.parametrize(("load", "threads", "hint"), [
    (0.1, 2, None), (0.4, 2, None), (1.0, 1, None), (1.0, 2, "--threads 1"), (2.0, 2, "--threads 1"), (7.5, 4, "--threads 1")])
def test_a_busy_machine_gets_a_hint_never_a_silent_change(monkeypatch, load, threads, hint):
    monkeypatch.setattr(rknas.util.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(rknas.util, "cpus_here", lambda: 2)
    got = rknas.util.busy_hint(threads)
    assert got is None if hint is None else (hint in got and f"load {load:.1f} on 2 CPUs" in got)


# ---- --resume continues the run as it was started, or says why not --------------------------
def test_resume_without_a_checkpoint_is_one_line_and_creates_nothing(cli, tmp_path):
    out = tmp_path / "mistyped"
    code, _, err = cli("train", "--config", _config(tmp_path), "--out", out, "--resume", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --resume: there is no run to continue in {out} (no checkpoint.pt)")
    assert not out.exists()


def test_resume_with_other_settings_names_them_and_changes_nothing(cli, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "--config", _config(tmp_path), "--epochs", "2", "--out", out, "--device", "cpu")[0] == 0
    before = (out / "checkpoint.pt").read_bytes()
    code, _, err = cli("train", "--config", _config(tmp_path), "--epochs", "3", "--out", out, "--resume", "--device", "cpu")
    assert code == 2 and err.count("\n") == 1
    assert "started with other settings (training.epochs 2 -> 3)" in err and "another --out" in err
    assert (out / "checkpoint.pt").read_bytes() == before
    code, _, err = cli("train", "--config", _config(tmp_path), "--epochs", "2", "--out", out, "--resume", "--device", "cpu")
    assert code == 0, err  # the same settings continue (here: a finished run, nothing left to train)
