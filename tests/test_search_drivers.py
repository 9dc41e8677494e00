"""Several `rknas search` processes on one study, SQLite and PostgreSQL: real processes, real Ray.

The order of events is forced with gated trials (they train only once the test creates a
file) and by watching the study, never by sleeping: driver A holds trial 0 open; drivers B
and C start together and hold trials 1 and 2, and A's trial must still be RUNNING; A is
killed (SIGKILL); the gate opens. B and C must then finish the study between them: recover
A's trial once its heartbeats are stale, replace it, and both exit 0.

The drivers join one Ray cluster for the module (`ray start --head`, three CPUs: one held trial
per driver), as drivers on a real cluster do; Ray ends a killed driver's trial workers with it.
"""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from clusters import head_node  # tests/support is on sys.path
from gated import GOOD, HELD, SPACE
from optuna.trial import TrialState

from rknas.storage import TrialRecord

pytestmark = pytest.mark.slow


TARGET = 4
# A live driver beats every second; a killed one is recovered 8 s after its last beat. Eight
# missed beats, not two: a busy machine can delay a live driver's heartbeat thread by seconds.
STALE_AFTER = 8
GUARD_S = 600  # guards against a hang, not a timing assumption


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The drivers' cluster; its workers wait for the module's gate file (they get the head's environment)."""
    tmp = tmp_path_factory.mktemp("drivers")
    gate = tmp / "gate"
    with head_node(tmp, 3, {**os.environ, "RKNAS_TEST_GATE": str(gate)}) as (address, _):
        yield {"address": address, "gate": gate}


class Watch:
    """Reads the study from the test process (one storage, so one connection pool)."""

    def __init__(self, url):
        self.storage = optuna.storages.RDBStorage(url)

    def trials(self):
        try:
            return optuna.load_study(study_name="tiny", storage=self.storage).get_trials()
        except KeyError:  # not created yet
            return []

    def until(self, what, procs, check):
        deadline = time.time() + GUARD_S
        while True:
            trials = self.trials()
            if check(trials):
                return trials
            for p in procs:
                assert p.poll() is None, f"a driver exited early ({p.returncode}) while waiting for {what}: {tail(p)}"
            assert time.time() < deadline, f"no {what} after {GUARD_S} s: {describe(trials, procs)}"
            time.sleep(0.2)


def tail(proc):
    proc.log.flush()
    return open(proc.log.name).read()[-3000:]


def describe(trials, procs):
    """The study's trials and every driver's log: what a hang needs for its diagnosis."""
    states = [(t.number, t.state.name, TrialRecord.of(t).driver) for t in trials]
    logs = "".join(f"\n--- driver {i} ({p.poll()}) ---\n{tail(p)}" for i, p in enumerate(procs))
    return f"trials {states}{logs}"


def running_with_driver(trials, number):
    return len(trials) > number and trials[number].state == TrialState.RUNNING and TrialRecord.of(trials[number]).driver


def test_drivers_share_a_study_and_recover_a_killed_one(any_storage, cluster, tmp_path):
    url = any_storage
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    gate = cluster["gate"]
    gate.unlink(missing_ok=True)
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    for params in (HELD, HELD, HELD, GOOD):
        study.enqueue_trial(params)
    env = {**os.environ, "RKNAS_TEST_GATE": str(gate)}
    cmd = [sys.executable, "-m", "rknas.cli", "search", "--address", cluster["address"], "--space", str(space_file),
           "--trials", str(TARGET), "--storage", url,
           "--study", "tiny", "--concurrency", "1", "--heartbeat-interval", "1", "--stale-after", str(STALE_AFTER)]

    def start(name):
        log = open(tmp_path / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        proc.log = log
        return proc

    watch = Watch(url)
    procs = []
    try:
        a = start("a")
        procs.append(a)
        watch.until("driver A's held trial", [a], lambda t: running_with_driver(t, 0))
        # B and C start together: each must leave A's live trial alone and hold one of its own.
        b, c = start("b"), start("c")
        procs += [b, c]
        trials = watch.until("held trials of drivers B and C", [a, b, c],
                             lambda t: running_with_driver(t, 1) and running_with_driver(t, 2))
        assert trials[0].state == TrialState.RUNNING  # B and C are past their start-up: A's trial was left alone
        driver_a, driver_b, driver_c = (TrialRecord.of(t).driver for t in trials[:3])
        assert len({driver_a, driver_b, driver_c}) == 3
        os.killpg(a.pid, signal.SIGKILL)  # as the OOM killer or a lost machine would
        a.wait()
        gate.touch()
        for p in (b, c):
            p.wait(timeout=GUARD_S)
            assert p.returncode == 0, tail(p)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            p.log.close()

    trials = watch.trials()
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    interrupted = [t for t in trials if TrialRecord.of(t).interrupted]
    counted = [t for t in trials if t.state.is_finished() and not TrialRecord.of(t).interrupted]
    assert [t.number for t in interrupted] == [0]  # A's trial, and only it
    reason = TrialRecord.of(trials[0]).fail_reason
    assert trials[0].state == TrialState.FAIL and driver_a in reason and f"more than {STALE_AFTER} s" in reason
    assert len(counted) >= TARGET
    assert [TrialRecord.of(t).driver for t in trials[1:3]] == [driver_b, driver_c]
    assert trials[1].state == trials[2].state == TrialState.COMPLETE
    assert {TrialRecord.of(t).driver for t in counted} <= {driver_b, driver_c}  # the replacement too
