"""Out of disk and out of memory say so in one line: in the trial record, the console and the exit."""

import errno
import sqlite3

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sqlalchemy import exc as sa_exc

from rknas.search import outcome
from rknas.search.objective import run_trial
from rknas.search.runner import load_data
from rknas.search.space import parse_space
from rknas.storage import TrialRecord, open_storage
from rknas.storage import retry as retry_mod

SPACE = {"name": "t", "data": {"name": "digits", "train_subset": 200}, "architecture": {"periods": 1, "strategy": ["E"], "stages": 1, "k": 8},
         "training": {"batch_size": 50, "warmup_epochs": 0}, "fidelity": {"epochs": 2, "early_stopping": False}}


def test_a_checkpoint_write_on_a_full_disk_is_a_one_line_trial_failure(tmp_path, monkeypatch):
    import torch

    space = parse_space(SPACE, "t")
    train, val = load_data(space)

    def full_disk(obj, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(torch, "save", full_disk)
    reports = []
    result = run_trial({"p1_strategy": "E", "seed": 0}, space, train, val, reports.append, checkpoint=tmp_path / "checkpoint.pt")
    assert result["failed"] == 1 and result["error"].startswith("no space left on the device writing ")
    assert "\n" not in result["error"] and "checkpoint.pt" in result["error"]
    state, _, attrs = outcome.optuna_state(outcome.outcome_of(result, False, space.metrics, space.fidelity.epochs))
    assert state == TrialState.FAIL and attrs == {"fail_reason": result["error"]}
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "checkpoint.pt.tmp").exists()


def test_torch_reporting_a_full_disk_as_a_runtime_error_is_named_for_what_it_is(tmp_path, monkeypatch):
    from rknas import util

    monkeypatch.setattr(util, "_nearly_full", lambda folder: True)

    def torch_style(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed")

    with pytest.raises(OSError) as exc:
        util.atomic_write(tmp_path / "c.pt", torch_style)
    assert exc.value.errno == errno.ENOSPC
    monkeypatch.setattr(util, "_nearly_full", lambda folder: False)
    with pytest.raises(RuntimeError):  # with room on the disk it is some other failure: left as it is
        util.atomic_write(tmp_path / "c.pt", torch_style)


@pytest.mark.parametrize("error,reason", [
    (MemoryError(), "out of memory (MemoryError: )"),
    (type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail"),
     "out of memory (OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB)"),
    (OSError(errno.ENOSPC, "No space left on device", "/x/c.pt"), "no space left on the device writing /x/c.pt"),
    (ValueError("other"), None),
])
def test_resource_reasons(error, reason):
    got = outcome.resource_reason(error)
    assert (got is None) if reason is None else (got.startswith(reason) and "\n" not in got)


@pytest.mark.parametrize("text,start", [
    ("ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.\nMemory on the node ...",
     "the trial's worker was killed for lack of memory: ray.exceptions.OutOfMemoryError"),
    ("Traceback\nray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.",
     "the trial's worker crashed: ray.exceptions.ActorDiedError: The actor died"),
    # Ray's generic death text names the OOM killer as one possible cause: not a memory kill.
    ("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
     "\tThe actor never ran - it was cancelled ... Possible causes: (1) the process was killed by the OOM killer "
     "due to high memory usage, (2) ray stop --force was called",
     "the trial's worker crashed: ray.exceptions.ActorDiedError"),
    ("", outcome.WORKER_CRASHED),
])
def test_worker_death_reasons(text, start):
    assert outcome.worker_death_reason(text).startswith(start)


def disk_full():
    return sa_exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))


def test_a_database_with_a_full_disk_stops_at_once_in_one_line(tmp_path, monkeypatch):
    calls = []

    def write():
        calls.append(1)
        raise disk_full()

    with pytest.raises(retry_mod.StorageFull) as exc:
        retry_mod.call_with_retry(write, limit_s=60, where="sqlite:///s.db")
    assert calls == [1]  # not retried: waiting does not free a disk
    assert "\n" not in str(exc.value) and "out of disk space" in str(exc.value) and "run the same command again" in str(exc.value)
    assert isinstance(exc.value, retry_mod.StorageUnavailable)


@pytest.mark.slow
def test_a_search_whose_database_disk_fills_exits_2_and_the_study_is_intact(ray_local, cli, tmp_path, monkeypatch):
    space_file = tmp_path / "t.yaml"
    space_file.write_text(yaml.safe_dump({**SPACE, "name": "full"}))
    url = f"sqlite:///{tmp_path}/full.db"
    real = optuna.storages.RDBStorage.set_trial_state_values
    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values",
                        lambda self, *a, **k: (_ for _ in ()).throw(disk_full()))
    args = ["search", "--space", space_file, "--trials", "2", "--storage", url, "--concurrency", "1",
            "--heartbeat-interval", "1", "--stale-after", "3"]
    code, _, err = cli(*args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "out of disk space" in err and "database or disk is full" in err
    study = optuna.load_study(study_name="full", storage=open_storage(url))  # readable, nothing half-written
    assert study.trials and all(t.state == TrialState.RUNNING for t in study.trials)
    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values", real)  # space freed
    code, _, err = cli(*args)
    assert code == 0, err
    trials = optuna.load_study(study_name="full", storage=url).trials
    counted = [t for t in trials if not TrialRecord.of(t).interrupted]
    assert [t.state for t in counted] == [TrialState.COMPLETE] * 2
