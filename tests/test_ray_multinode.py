"""A search on a real two-node Ray cluster whose worker node has its own /tmp, as a second machine would.

The head runs no trials (``--num-cpus 0``); the worker node is started by ``ray start`` in its
own mount namespace with a private tmpfs on ``/tmp`` (``unshare --mount``, root only, as CI
runs): a folder the driver writes in /tmp does not exist there, exactly as on another machine.
``/var/tmp`` plays the shared disk (NFS) both see. A Ray of several nodes cannot stay on
127.0.0.1 (a Ray on loopback refuses a second node), so this cluster uses the machine's own
address, which the kernel delivers over the loopback interface: nothing leaves the machine.
"""

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml
from clusters import client_env, free_port, stop, wait_for  # tests/support is on sys.path
from gated import GOOD, SPACE
from optuna.trial import TrialState

from rknas.search.ray_env import trial_worker_pids
from rknas.storage import TrialRecord

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT = 180  # generous: only a node that never comes up waits this long
LATE_SPACE = {**SPACE, "architecture": {**SPACE["architecture"], "strategy": ["E", "search_late_gate"]}}
LATE_HELD = {**GOOD, "p1_strategy": "search_late_gate"}  # trains epoch 1, then waits for the gate


# What the node must still see if it lives under /tmp (a checkout there, as a fresh clone in /tmp is):
# the repository (tests/support, the code) and the Python environment.
KEEP_VISIBLE = (Path(__file__).resolve().parents[1], Path(sys.prefix).resolve())


def private_tmp_keeping(paths, holder: Path) -> str:
    """Shell commands that give this mount namespace an empty /tmp, with ``paths`` under /tmp still in place.

    Each such path is bind-mounted to a folder outside /tmp first, then back over the new tmpfs;
    the mounts are private to the namespace, so the machine's own /tmp is untouched.
    """
    inside = sorted({p for p in paths if p.is_relative_to("/tmp")})
    holder.mkdir(parents=True, exist_ok=True)
    steps = []
    for i, path in enumerate(inside):
        (holder / str(i)).mkdir(exist_ok=True)
        steps.append(f"mount --bind {path} {holder / str(i)}")
    steps.append("mount -t tmpfs tmpfs /tmp")
    for i, path in enumerate(inside):
        steps += [f"mkdir -p {path}", f"mount --bind {holder / str(i)} {path}"]
    return " && ".join(steps)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head with no CPUs and a worker node with 2 CPUs and a private /tmp; yields address, HOME, shared folder."""
    if os.geteuid() != 0:
        pytest.skip("a worker node with its own /tmp needs `unshare --mount`, which needs root (CI runs as root)")
    tmp = tmp_path_factory.mktemp("two-nodes")
    home = tmp / "home"
    (home / ".ray").mkdir(parents=True)
    token = secrets.token_hex(32)
    (home / ".ray" / "auth_token").write_text(token)
    shared = Path(tempfile.mkdtemp(prefix="rknas-shared-", dir="/var/tmp"))  # outside /tmp: both nodes see it
    temp_dir = Path(tempfile.mkdtemp(prefix="rkc"))  # short: Ray's socket paths live under it
    marker = f"RKNAS_TEST_CLUSTER={secrets.token_hex(8)}"
    env = {**client_env(home, RAY_USAGE_STATS_ENABLED="0"), **dict([marker.split("=", 1)])}
    procs = []
    logs = []
    try:
        logs.append((tmp / "head.log").open("w"))
        head = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", "--port", str(free_port()), "--temp-dir", str(temp_dir),
             "--num-cpus", "0", "--object-store-memory", str(200 * 1024**2), "--include-dashboard", "false",
             "--dashboard-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
             "--disable-usage-stats"],
            env=env, stdout=logs[-1], stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp,
        )
        procs.append(head)
        text = wait_for(tmp / "head.log", "Ray runtime started", head, START_TIMEOUT)
        address = re.search(r"ray start --address='([^']+)'", text).group(1)
        ports = " ".join(f"--{flag} {free_port()}" for flag in (
            "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port", "dashboard-agent-grpc-port"))
        keep = private_tmp_keeping(KEEP_VISIBLE, shared / "keep")
        script = (f"{keep} && mkdir /tmp/home && HOME=/tmp/home exec {RAY} start --block "
                  f"--address {address} --num-cpus 2 --object-store-memory {200 * 1024**2} {ports} --disable-usage-stats")
        node_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RKNAS_TEST_GATE": str(shared / "gate")}
        logs.append((tmp / "node.log").open("w"))
        node = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                env=node_env, stdout=logs[-1], stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
        procs.append(node)
        wait_for(tmp / "node.log", "Ray runtime started", node, START_TIMEOUT)
        yield {"address": address, "home": home, "shared": shared, "marker": marker}
    finally:
        stop(procs, marker)
        for log in logs:
            log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


def search(two_nodes, tmp: Path, space: dict, *args: str, trials: int = 1) -> subprocess.Popen:
    path = tmp / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return subprocess.Popen(
        [sys.executable, "-m", "rknas.cli", "search", "--address", two_nodes["address"], "--space", str(path),
         "--trials", str(trials), "--storage", f"sqlite:///{tmp}/s.db", "--study", "tiny", *args],
        cwd=tmp, env=client_env(two_nodes["home"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_a_local_trial_storage_is_refused_in_one_line_before_any_trial(two_nodes, tmp_path):
    proc = search(two_nodes, tmp_path, SPACE)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert re.match(r"error: Ray node \S+ \(\w{8}\) cannot see the trial storage /tmp/rknas-tune-\d+ \(a folder on this "
                    r"machine only\): ", lines[0]), lines[0]
    assert "--trial-storage (or RKNAS_TRIAL_STORAGE)" in lines[0] and "s3://" in lines[0]
    assert not (tmp_path / "s.db").exists()  # refused before the study was written


def test_shared_trial_storage_runs_on_the_worker_node_and_a_killed_trial_continues_from_its_checkpoint(two_nodes, tmp_path):
    gate = two_nodes["shared"] / "gate"
    gate.unlink(missing_ok=True)
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    study.enqueue_trial(LATE_HELD)
    study.enqueue_trial(GOOD)
    checkpoints = two_nodes["shared"] / "checkpoints"
    proc = search(two_nodes, tmp_path, LATE_SPACE, "--trial-storage", str(checkpoints), "--concurrency", "1",
                  "--max-retries", "2", trials=2)
    killed = None
    deadline = time.monotonic() + 600  # a guard against a hang, not a timing assumption
    try:
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            held = optuna.load_study(study_name="tiny", storage=url).trials[0]
            # Epoch 1 is recorded (and checkpointed before it was reported): the trial now waits in epoch 2.
            if held.state == TrialState.RUNNING and 1 in held.intermediate_values:
                workers = trial_worker_pids(two_nodes["marker"])  # this cluster's, not another test's
                assert len(workers) == 1, workers  # concurrency 1: the held trial's worker, on the worker node
                killed = workers[0]
                os.kill(killed, 9)
            time.sleep(0.2)
        assert killed is not None, "the held trial never reached its second epoch"
        gate.touch()
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    record = TrialRecord.of(trials[0])
    # Killed inside training (not while Tune sets the trial up, see test_search_faults): one retry.
    assert not record.interrupted and record.attempts == 2 and len(record.retry_reasons or []) == 1
    # From the checkpoint: epoch 1 is not trained (or reported) twice.
    assert len(record.val_accuracy_per_epoch) == SPACE["fidelity"]["epochs"], record.val_accuracy_per_epoch
    assert len(trials) == 2 and [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert sorted(p.name for p in checkpoints.iterdir()) == []  # each round's experiment folder is removed after it
