"""Where Tune keeps trial checkpoints: the option, its variable, bad values refused in one line (no Ray)."""

import pytest

from rknas.errors import ConfigError
from rknas.options import SearchOptions
from rknas.storage.trial_storage import TRIAL_STORAGE_ENV, TrialStorage, default_trial_storage, scheme_of


@pytest.mark.parametrize(("path", "scheme"), [
    ("/mnt/nfs/rknas", None), ("runs/ckpt", None), ("s3://bucket/p", "s3"), ("GS://b", "gs"),
    ("file:///var/tmp/x", "file"), ("s3://b/p?endpoint_override=127.0.0.1:9000&scheme=http", "s3"), ("a:b", None),
])
def test_scheme_of(path, scheme):
    assert scheme_of(path) == scheme


@pytest.mark.parametrize("bad", ["ftp://host/ckpt", "http://127.0.0.1/x", "nfs://server/export"])
def test_a_scheme_tune_cannot_open_is_one_line_naming_the_flag(bad):
    with pytest.raises(ConfigError) as exc:
        SearchOptions(space="digits_quick", trial_storage=bad)
    scheme = bad.split("://")[0]
    assert str(exc.value).startswith(f"--trial-storage cannot be opened by Ray Tune: scheme {scheme}:// is not one of ")
    assert "s3://" in str(exc.value) and "\n" not in str(exc.value)


def test_a_bad_scheme_from_the_command_line_exits_2_before_anything(cli, tmp_path):
    code, _, err = cli("search", "--space", "digits_quick", "--trial-storage", "ftp://h/x",
                       "--storage", f"sqlite:///{tmp_path}/s.db")
    assert code == 2 and err.startswith("error: --trial-storage cannot be opened by Ray Tune") and err.count("\n") == 1
    assert not (tmp_path / "s.db").exists()


def test_the_option_then_the_variable_then_a_temp_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(TRIAL_STORAGE_ENV, raising=False)
    assert TrialStorage.open().path == default_trial_storage()
    monkeypatch.setenv(TRIAL_STORAGE_ENV, str(tmp_path / "from-env"))
    assert TrialStorage.open().path == str(tmp_path / "from-env")
    opened = TrialStorage.open(str(tmp_path / "given"))
    assert opened.path == str(tmp_path / "given") and (tmp_path / "given").is_dir()  # created, as Tune would
    assert opened.tune_kwargs() == {"storage_path": str(tmp_path / "given")}


def test_a_relative_folder_is_made_absolute_for_tune(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert TrialStorage.open("ckpt").tune_kwargs() == {"storage_path": str(tmp_path / "ckpt")}


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError) as exc:
        TrialStorage.open(str(tmp_path / "file" / "ckpt"))
    assert str(exc.value).startswith(f"--trial-storage {tmp_path}/file/ckpt: cannot open it: ")
    assert "\n" not in str(exc.value)


def test_a_callers_filesystem_is_passed_to_tune_with_its_path(tmp_path):
    import pyarrow.fs

    fs = pyarrow.fs.SubTreeFileSystem(str(tmp_path), pyarrow.fs.LocalFileSystem())
    opened = TrialStorage.open("bucket/rknas", filesystem=fs)
    assert opened.tune_kwargs() == {"storage_path": "bucket/rknas", "storage_filesystem": fs}
    assert (tmp_path / "bucket" / "rknas").is_dir()


def test_removing_a_rounds_folder_leaves_the_storage(tmp_path):
    opened = TrialStorage.open(str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "rknas-x-1" / "trial").mkdir(parents=True)
    opened.remove("rknas-x-1")
    opened.remove("never-there")  # nothing to remove is not an error
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_a_single_node_cluster_is_not_checked(ray_local, tmp_path):
    """One node sees what the driver sees: no task is sent (the two-node case is tests/test_ray_multinode.py)."""
    assert TrialStorage.open(str(tmp_path / "ckpt")).check_nodes(1, 0) == 0


def test_a_bad_value_from_the_variable_names_the_variable(monkeypatch):
    monkeypatch.setenv(TRIAL_STORAGE_ENV, "ftp://host/ckpt")
    with pytest.raises(ConfigError) as exc:
        TrialStorage.open()
    assert str(exc.value).startswith("RKNAS_TRIAL_STORAGE ftp://host/ckpt: cannot open it: cannot be opened by Ray Tune")


@pytest.mark.slow
def test_a_node_that_left_after_it_was_listed_is_skipped_not_a_crash(ray_local, tmp_path, monkeypatch):
    """Seen in the chaos run at scale: a driver restarted 3 s after a node was lost listed it as
    alive, its check could not be scheduled there, and the search exited 1 with a traceback."""
    import secrets

    import ray

    real = ray.nodes()
    gone = {**real[0], "NodeID": secrets.token_hex(28), "NodeManagerAddress": "127.0.0.9"}
    monkeypatch.setattr(ray, "nodes", lambda: [*real, gone])
    assert TrialStorage.open(str(tmp_path / "ckpt")).check_nodes(1, 0) == len(real)
