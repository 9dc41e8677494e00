"""`rknas search --address` on a real cluster, started by `ray start --head` as Ray does by default.

Ray 2.60's `ray start --head` turns on token authentication when a token exists (here the test's
own ~/.ray/auth_token, HOME being a temp folder). The head runs on 127.0.0.1 with its own ports
and temp dir, and is stopped by its process ids (never `ray stop`, which stops every Ray of the
user). The searches run as separate processes with no Ray variables in their environment.
"""

import secrets
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from clusters import client_env, head_node  # tests/support is on sys.path
from optuna.trial import TrialState

pytestmark = pytest.mark.slow

SPACE = {
    "name": "tiny",
    "data": {"name": "digits", "train_subset": 200},
    "framework": "cifar",
    "architecture": {"periods": 2, "strategy": ["E"], "stages": 1, "k": [8, 16], "attention": False},
    "training": {"lr": 0.2, "batch_size": 25, "warmup_epochs": 0},
    "fidelity": {"epochs": 1, "min_epochs": 1},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node on 127.0.0.1 with token authentication; yields its address, HOME and temp dir."""
    tmp = tmp_path_factory.mktemp("cluster")
    home = tmp / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    with head_node(tmp, 2, client_env(home)) as (address, temp_dir):
        yield {"address": address, "home": home, "temp_dir": temp_dir, "tmp": tmp}


def search(cluster, tmp: Path, env: dict[str, str], trials: int = 1) -> tuple[subprocess.CompletedProcess, int, str]:
    space = tmp / "tiny.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    url = f"sqlite:///{tmp}/s.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rknas.cli", "search", "--address", cluster["address"], "--space", str(space),
         "--trials", str(trials), "--storage", url, "--study", "tiny", "--no-early-stopping"],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid, url


def test_search_joins_a_token_cluster_with_no_extra_environment(cluster, tmp_path):
    run, pid, url = search(cluster, tmp_path, client_env(cluster["home"]), trials=2)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [t.user_attrs for t in trials]
    logs = cluster["temp_dir"] / "session_latest" / "logs"
    assert list(logs.glob(f"python-core-driver-*_{pid}.log")), "the search did not run as a driver of this cluster"


@pytest.mark.parametrize("token", ["wrong", None], ids=["wrong-token", "no-token"])
def test_search_without_the_clusters_token_is_one_line(cluster, tmp_path, token):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    if token:
        (home / ".ray" / "auth_token").write_text(token)
    run, _, _ = search(cluster, tmp_path, client_env(home))
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
    what = f"refused the authentication token from {home}/.ray/auth_token" if token else "none was found"
    assert lines[0].startswith(f"error: the Ray cluster at {cluster['address']} ") and what in lines[0], lines[0]
    assert "`ray get-auth-token` on its head node" in lines[0] and "RAY_AUTH_TOKEN_PATH" in lines[0]
