"""A search under a seeded schedule of faults, and the invariants that must hold afterwards.

Runs `rknas search` as a user would (its own process, its own local Ray) on a small digits
space, and while it runs injects, at seeded points of the study's progress:

- ``driver``: SIGKILL of the main search process (its whole process group), then the same
  command started again;
- ``worker``: SIGKILL of one Ray worker that is running a trial (``ray::ImplicitFunc``);
- ``database``: a restart of the database: PostgreSQL stopped (fast shutdown) and started
  again after ``--outage`` seconds; SQLite locked exclusively by another process for as long;
- ``join`` / ``leave``: a second `rknas search` on the same study starts, and later stops
  (Ctrl-C);
- ``node``: a Ray node lost: every process of the cluster's worker node killed (SIGKILL), and a
  new worker node started in its place, as an autoscaler would (the search then runs on a
  two-node cluster it joins with ``--address``: a head and a worker node);
- ``cut``: a connection cut inside a commit (PostgreSQL): every driver reaches the database
  through a TCP proxy on 127.0.0.1 (tests/support/cutting_proxy.py), which lets the next COMMIT
  through and swallows the server's reply, or cuts in the middle of the reply, in turn.

``--table`` answers every trial from a benchmark table (``rknas search --table``), so a run of
thousands of trials takes minutes: what is exercised is the search, not the training.

At the end it checks and prints (and writes as JSON with ``--out``):

- the study holds exactly ``--trials`` counted (finished, not interrupted) trials;
- no trial is RUNNING;
- no trial is FAIL without a real error: every FAIL is an interrupted trial of a killed or
  stopped driver (the space has no failing architecture);
- no trial's result was recorded twice (the counted trials are distinct trials, each told once);
- every trial a killed driver left running was recovered, never sooner than the stale timeout
  after the kill (no live trial taken) and at most the stale timeout plus a driver's start-up
  (``--restart-s``, default ``RESTART_S``) after it;
- the wall time: the whole run, a fault-free run of the same search (``--baseline``), and
  the difference, which is what the faults cost.

Usage:
    python benchmarks/chaos.py --backend sqlite --trials 40 --seed 0 --out benchmarks/chaos_sqlite.json
    python benchmarks/chaos.py --backend postgresql --trials 40 --seed 0 --out benchmarks/chaos_postgresql.json
    python benchmarks/chaos.py --backend postgresql --trials 1000 --table --concurrency 8 \
        --faults "driver*8,worker*10,database*6,join*5,leave*5,node*6,cut*12" --out benchmarks/chaos_scale.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import optuna
import yaml
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))  # the private PostgreSQL server of the tests

from rknas.search.ray_env import trial_worker_pids  # noqa: E402
from rknas.storage import TrialRecord  # noqa: E402

SPACE = {
    "name": "chaos",
    "data": {"name": "digits", "train_subset": 400},
    "framework": "cifar",
    "architecture": {"periods": 1, "strategy": ["E", "I", "R"], "stages": {"low": 1, "high": 2}, "k": [8, 12, 16]},
    "training": {"lr": {"low": 0.05, "high": 0.3, "log": True}, "batch_size": 40, "warmup_epochs": 0},
    "fidelity": {"epochs": 3, "min_epochs": 1, "reduction_factor": 3},
}
HEARTBEAT_S, STALE_S = 1, 6
RESTART_S = 30.0  # a restarted driver's start-up (imports, data, Ray) before it looks for stale trials
FAULTS = ("driver", "worker", "database", "join", "leave", "node", "cut")
TABLE = REPO / "benchmarks" / "tables" / "fashion_mnist_bench.db.gz"
CUT_MODES = ("after", "mid_reply")  # the COMMIT applied and its reply lost; half a reply


@dataclass
class Fault:
    kind: str
    at_finished: int  # injected once the study holds this many counted trials
    injected_at: Optional[float] = None  # time.time()
    detail: str = ""


@dataclass
class Report:
    backend: str
    trials: int
    seed: int
    faults: list[dict] = field(default_factory=list)
    counted: int = 0
    running: int = 0
    fail_without_error: int = 0
    recorded_twice: int = 0  # trials with an epoch recorded twice (a longer curve than the space's epochs)
    created_twice: int = 0  # trials sharing one create call's key: what a retried create after a lost reply made
    lost_interrupts: int = 0  # second drivers that ran on after their Ctrl-C (exit 0 at the end, not 130)
    offenders: list[dict] = field(default_factory=list)  # trials to look at: a curve too long, or no parameters
    interrupted: int = 0
    retried_trials: int = 0
    recovery_s: list[float] = field(default_factory=list)
    recovery_limit_s: float = 0.0
    # per recovery: seconds of database outage that began between the kill and the recovery
    # (a restarted driver waits for the database like any call: the limit grows by as much)
    recovery_outage_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    baseline_wall_s: Optional[float] = None
    driver_starts: int = 0
    invariants: dict[str, bool] = field(default_factory=dict)


def schedule(trials: int, seed: int, kinds: list[str]) -> list[Fault]:
    """Fault thresholds spread over 10%..85% of the run, in a seeded order; leave after join."""
    rng = random.Random(seed)
    points = sorted(rng.sample(range(max(1, trials // 10), max(2, int(trials * 0.85))), len(kinds)))
    order = [k for k in kinds if k != "leave"]
    rng.shuffle(order)
    leaves = kinds.count("leave")
    for i in [i for i, k in enumerate(order) if k == "join"][::-1]:  # a second driver must have joined before it can leave
        if leaves:
            order.insert(i + 1, "leave")
            leaves -= 1
    order += ["leave"] * leaves
    return [Fault(kind, at) for kind, at in zip(order, points)]


def counted(url: str, study: str = "chaos") -> int:
    """COMPLETE and PRUNED trials of the study, interrupted ones apart (0 while it is not there or the database is away)."""
    from rknas.storage.bulk import tally

    try:
        counts = tally(optuna.load_study(study_name=study, storage=url))
    except Exception:  # not created yet, or the database is away (a fault)
        return 0
    return counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)


class Search:
    """One `rknas search` process, in a process group of its own (its Ray included)."""

    def __init__(self, args: list[str], log: Path, env: Optional[dict[str, str]] = None):
        self.log = open(log, "a")
        env = env or {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "rknas.cli", *args], stdout=self.log, stderr=self.log,
                                     start_new_session=True, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)




class Database:
    def __init__(self, backend: str, work: Path):
        self.backend = backend
        self.server: Any = None
        if backend == "postgresql":
            from rknas_pgserver import PostgresServer

            self.server = PostgresServer().start()
            self.direct_url = self.server.create_database()
            from cutting_proxy import CuttingProxy

            self.proxy = CuttingProxy(self.server.port)  # the drivers' way to the database: `cut` faults happen here
            self.url = self.proxy.url(self.direct_url)
        else:
            self.path = work / "chaos.db"
            self.url = f"sqlite:///{self.path}"
        self.monitor_url = getattr(self, "direct_url", self.url)  # the benchmark's own reads: never through the proxy

    def outage(self, seconds: float) -> str:
        if self.server is not None:
            self.server.halt()
            time.sleep(seconds)
            self.server.resume()
            return f"PostgreSQL stopped (fast) for {seconds:g} s"
        conn = sqlite3.connect(self.path, timeout=60)
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.rollback()
        conn.close()
        return f"SQLite locked exclusively for {seconds:g} s"

    def fresh(self) -> str:
        """Another empty database on the same server (for the baseline)."""
        if self.server is not None:
            return self.server.create_database()
        return f"sqlite:///{self.path.with_name('baseline.db')}"

    def cut(self, mode: str) -> str:
        """Cut the next COMMIT's connection in ``mode`` (the drivers reach the database through the proxy)."""
        before = len(self.proxy.cuts)
        self.proxy.arm(mode, b"COMMIT")
        deadline = time.time() + 120
        while len(self.proxy.cuts) == before and time.time() < deadline:
            time.sleep(0.05)
        if len(self.proxy.cuts) == before:
            self.proxy.stop_cutting()
            return "no COMMIT passed within 120 s: nothing cut"
        return {"after": "a COMMIT let through, its reply swallowed", "mid_reply": "a COMMIT's reply cut halfway"}[mode]

    def close(self) -> None:
        if self.server is not None:
            self.proxy.close()
            self.server.stop()


class Cluster:
    """A two-node Ray cluster on this machine's address, started with `ray start` as on two machines
    (token auth, no loopback switch): a head and a worker node that ``lose_node`` replaces."""

    def __init__(self, work: Path, cpus: int):
        import re
        import secrets

        import clusters  # tests/support

        self.clusters, self.work, self.cpus = clusters, work, cpus
        self.home = work / "home"  # the users' HOME: Ray's token is read from ~/.ray/auth_token
        (self.home / ".ray").mkdir(parents=True)
        self.token = secrets.token_hex(32)
        (self.home / ".ray" / "auth_token").write_text(self.token)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rkc"))  # short: Ray's socket paths live under it
        self.marker = f"RKNAS_CHAOS_CLUSTER={secrets.token_hex(8)}"
        key, value = self.marker.split("=", 1)
        self.env = {**clusters.client_env(self.home, RAY_USAGE_STATS_ENABLED="0"), key: value}
        free = clusters.free_port
        log = work / "head.log"
        with log.open("w") as out:
            self.head = subprocess.Popen(
                [str(clusters.RAY), "start", "--head", "--block", "--port", str(free()), "--temp-dir", str(self.temp_dir),
                 "--num-cpus", str(cpus), "--object-store-memory", str(200 * 1024**2), "--include-dashboard", "false",
                 "--dashboard-port", str(free()), "--dashboard-agent-listen-port", str(free()), "--disable-usage-stats"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=work)
        text = clusters.wait_for(log, "Ray runtime started", self.head, clusters.START_TIMEOUT)
        found = re.search(r"ray start --address='([^']+)'", text)
        assert found, text
        self.address = found.group(1)
        self.nodes = 0
        self.worker: Optional[tuple[subprocess.Popen, str]] = None
        self.add_node()

    def add_node(self) -> None:
        import secrets

        self.nodes += 1
        node_marker = f"RKNAS_CHAOS_NODE={secrets.token_hex(8)}"
        key, value = node_marker.split("=", 1)
        env = {**self.env, key: value, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        free = self.clusters.free_port
        log = self.work / f"node{self.nodes}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(self.clusters.RAY), "start", "--address", self.address, "--block", "--num-cpus", str(self.cpus),
                 "--object-store-memory", str(200 * 1024**2), "--dashboard-agent-listen-port", str(free()),
                 "--metrics-export-port", str(free()), "--runtime-env-agent-port", str(free()),
                 "--dashboard-agent-grpc-port", str(free()), "--disable-usage-stats"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.work)
        self.clusters.wait_for(log, "Ray runtime started", proc, self.clusters.START_TIMEOUT)
        self.worker = (proc, node_marker)

    def lose_node(self) -> str:
        """SIGKILL every process of the worker node (its raylet, its trials), then start a new one."""
        assert self.worker is not None
        proc, marker = self.worker
        killed = len(self.clusters.marked_pids(marker))
        self.clusters.signal_all(proc, marker, signal.SIGKILL)
        proc.wait(timeout=60)
        self.add_node()
        return f"worker node lost ({killed} processes killed), a new one started"

    def close(self) -> None:
        procs = [self.head] + ([self.worker[0]] if self.worker is not None else [])
        self.clusters.stop(procs, self.marker)  # the node's processes carry the cluster's marker too
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class Stuck(RuntimeError):
    """The run did not reach its target within the deadline (a hang is a failure, not a wait)."""


def run(backend: str, trials: int, seed: int, kinds: list[str], outage: float, baseline: bool,
        work: Path, say=print, deadline_s: float = 3600.0, table: bool = False, concurrency: int = 2,
        time_scale: float = 0.02, restart_s: float = RESTART_S) -> Report:
    space_file = work / "chaos.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    db = Database(backend, work)
    try:
        cluster = Cluster(work, max(1, concurrency // 2)) if "node" in kinds else None
    except BaseException:
        db.close()
        raise
    report = Report(backend=backend, trials=trials, seed=seed, recovery_limit_s=STALE_S + restart_s)
    cut_modes = list(CUT_MODES)
    env = cluster.env if cluster is not None else None  # the drivers join the cluster as its users would
    if cluster is not None:
        marker = cluster.marker  # every process of the cluster carries it, its trial workers too
    else:  # the driver's own local Ray: its workers inherit the driver's environment
        marker = f"RKNAS_CHAOS_RUN={secrets.token_hex(8)}"
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **dict([marker.split("=", 1)])}
    try:
        def args(url: str) -> list[str]:
            space = ["--space", "fashion_mnist_bench", "--table", str(TABLE), "--time-scale", str(time_scale),
                     "--cpus-per-trial", "0.25"] if table else ["--space", str(space_file)]
            where = ["--address", cluster.address] if cluster is not None else []
            return ["search", *space, *where, "--study", "chaos", "--trials", str(trials), "--storage", url,
                    "--concurrency", str(concurrency), "--seed", str(seed), "--heartbeat-interval", str(HEARTBEAT_S),
                    "--stale-after", str(STALE_S), "--storage-retry", "120"]

        if baseline:
            t0 = time.time()
            base = Search(args(db.fresh()), work / "baseline.log", env)
            base.proc.wait()
            report.baseline_wall_s = time.time() - t0
            say(f"baseline (no faults): {report.baseline_wall_s:.0f} s, exit {base.proc.returncode}")

        plan = schedule(trials, seed, kinds)
        say("faults: " + ", ".join(f"{f.kind}@{f.at_finished}" for f in plan))
        t0 = time.time()
        main = Search(args(db.url), work / "driver.log", env)
        report.driver_starts = 1
        second: Optional[Search] = None
        lingering: list[Search] = []  # second drivers that did not stop on their Ctrl-C
        kills: list[float] = []
        outages: list[tuple[float, float]] = []  # (start, seconds) of each database outage
        pending = list(plan)
        last_exit_count = -1
        outage_thread: Optional[threading.Thread] = None
        while True:
            if time.time() - t0 > deadline_s:
                for proc in (main, second):
                    if proc is not None:
                        proc.kill()
                tail = (work / "driver.log").read_text(errors="replace").splitlines()[-20:]
                raise Stuck(f"{counted(db.monitor_url)}/{trials} trials after {deadline_s:g} s; the driver's log ends:\n"
                            + "\n".join(tail))
            done = counted(db.monitor_url)
            if pending and done >= pending[0].at_finished:
                fault = pending.pop(0)
                fault.injected_at = time.time()
                if fault.kind == "driver":
                    main.kill()
                    kills.append(fault.injected_at)
                    main = Search(args(db.url), work / "driver.log", env)
                    report.driver_starts += 1
                    fault.detail = "SIGKILL of the driver's process group, same command restarted"
                elif fault.kind == "worker":
                    workers = trial_worker_pids(marker)  # this run's, not another Ray's on the machine
                    if workers:
                        os.kill(workers[0], signal.SIGKILL)
                        fault.detail = f"SIGKILL of Ray worker {workers[0]}"
                    else:
                        pending.insert(0, fault)  # no trial running at this instant: try again shortly
                        fault.injected_at = None
                elif fault.kind == "database":
                    outages.append((fault.injected_at, outage))
                    outage_thread = threading.Thread(target=lambda f=fault: setattr(f, "detail", db.outage(outage)))
                    outage_thread.start()
                elif fault.kind == "join":
                    second = Search(args(db.url), work / "second.log", env)
                    fault.detail = "a second driver joined"
                elif fault.kind == "node":
                    assert cluster is not None
                    fault.detail = cluster.lose_node()
                elif fault.kind == "cut":
                    mode = cut_modes[0]
                    cut_modes.append(cut_modes.pop(0))
                    fault.detail = db.cut(mode)
                elif fault.kind == "leave" and second is not None:
                    second.interrupt()
                    try:  # a driver that does not stop must not hold back the faults after it
                        second.proc.wait(timeout=60)
                        fault.detail = f"the second driver stopped (Ctrl-C), exit {second.proc.returncode}"
                    except subprocess.TimeoutExpired:
                        fault.detail = "the second driver did not stop within 60 s of its Ctrl-C (it runs on)"
                        report.lost_interrupts += 1
                        lingering.append(second)
                if fault.injected_at is not None:
                    say(f"  t={fault.injected_at - t0:5.0f} s  {fault.kind:8s} after {done} trials: {fault.detail}")
            if not main.alive():
                now_counted = counted(db.monitor_url)
                if main.proc.returncode == 0 and now_counted >= trials:
                    break
                if main.proc.returncode == 0 and now_counted == last_exit_count:
                    # rknas says the target is reached, but some trials it counts are not good ones
                    # (say, a FAIL with no real error): an invariant below fails; restarting would loop.
                    say(f"  the driver exited 0 twice at {now_counted}/{trials} good trials: it counts others; stopping")
                    break
                last_exit_count = now_counted
                say(f"  the driver exited {main.proc.returncode} early: starting the same command again")
                main = Search(args(db.url), work / "driver.log", env)
                report.driver_starts += 1
            time.sleep(0.5)
        if outage_thread is not None:
            outage_thread.join()
        if second is not None and second.alive():
            second.proc.wait(timeout=300)
        for other in lingering:
            other.proc.wait(timeout=300)
        report.wall_s = time.time() - t0
        report.faults = [asdict(f) for f in plan if f.injected_at is not None]
        # epochs: the tables' and SPACE's fidelity.epochs
        _check(report, db.monitor_url, kills, epochs=4 if table else 3, outages=outages)
    finally:
        if cluster is not None:
            cluster.close()
        db.close()
    return report


def _check(report: Report, url: str, kills: list[float], epochs: int,
           outages: Optional[list[tuple[float, float]]] = None) -> None:
    trials = optuna.load_study(study_name="chaos", storage=url).get_trials(deepcopy=False)
    records = {t.number: TrialRecord.of(t) for t in trials}
    good = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not records[t.number].interrupted]
    report.counted = len(good)
    report.running = sum(t.state == TrialState.RUNNING for t in trials)
    report.fail_without_error = sum(t.state == TrialState.FAIL and not records[t.number].interrupted for t in trials)
    report.interrupted = sum(records[t.number].interrupted for t in trials)
    twice = [t for t in trials if len(records[t.number].val_accuracy_per_epoch) > epochs]
    report.recorded_twice = len(twice)
    report.offenders = [{"number": t.number, "state": t.state.name, "curve": records[t.number].val_accuracy_per_epoch,
                         "attempts": records[t.number].attempts, "retry_reasons": records[t.number].retry_reasons,
                         "intermediate": t.intermediate_values, "table_run": records[t.number].table_run}
                        for t in twice]
    from rknas.storage.retry import CREATE_KEY

    keys = [t.system_attrs.get(CREATE_KEY) for t in trials if t.system_attrs.get(CREATE_KEY)]
    report.created_twice = len(keys) - len(set(keys))
    report.offenders += [{"number": t.number, "state": t.state.name, "no parameters": True,
                          "fail_reason": records[t.number].fail_reason} for t in trials if not t.params]
    report.retried_trials = sum((records[t.number].attempts or 1) > 1 for t in trials)
    for t in trials:
        r = records[t.number]
        if r.interrupted and "heartbeat" in (r.fail_reason or "") and t.datetime_complete is not None and kills:
            ended = t.datetime_complete.timestamp()
            killed = max((k for k in kills if k <= ended), default=None)
            if killed is not None:
                report.recovery_s.append(round(ended - killed, 1))
                report.recovery_outage_s.append(sum(d for at, d in outages or [] if killed <= at <= ended))
    report.invariants = {
        "target reached exactly": report.counted == report.trials,
        "none RUNNING": report.running == 0,
        "no FAIL without a real error": report.fail_without_error == 0,
        "no result recorded twice": report.recorded_twice == 0,
        "no trial created twice": report.created_twice == 0,
        "every Ctrl-C stopped its driver": report.lost_interrupts == 0,
        "dead drivers' trials recovered in time": recovered_in_time(report),
    }


def recovered_in_time(report: Report) -> bool:
    """Each dead driver's trials were recovered no sooner than staleness allows, and no later than
    the limit plus any database outage that began during the recovery."""
    extra = report.recovery_outage_s or [0.0] * len(report.recovery_s)
    return all(STALE_S - HEARTBEAT_S <= s <= report.recovery_limit_s + x for s, x in zip(report.recovery_s, extra))


def main(argv: Optional[list[str]] = None) -> Report:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--faults", default="driver,worker,database,join,leave,worker,driver",
                   help="comma-separated kinds, in any order, KIND*N for N of a kind (" + ", ".join(FAULTS) + ")")
    p.add_argument("--table", action="store_true", help="answer trials from the shipped Fashion-MNIST table, not by training")
    p.add_argument("--time-scale", type=float, default=0.02, help="with --table: real seconds per recorded second")
    p.add_argument("--concurrency", type=int, default=2, help="trials at once (per driver)")
    p.add_argument("--outage", type=float, default=8.0, help="seconds the database is away")
    p.add_argument("--no-baseline", action="store_true", help="skip the fault-free run")
    p.add_argument("--out", type=Path, help="write the report as JSON here")
    p.add_argument("--deadline", type=float, default=3600.0, help="give up (exit 1) after this many seconds")
    p.add_argument("--restart-s", type=float, default=RESTART_S,
                   help="a restarted driver's start-up allowed in the recovery limit (a machine busy with other work needs more)")
    a = p.parse_args(argv)
    kinds = []
    for item in (k.strip() for k in a.faults.split(",") if k.strip()):
        kind, _, times = item.partition("*")
        if times and not times.isdigit():
            p.error(f"bad count in {item!r}: write KIND*N, N a whole number")
        kinds += [kind] * int(times or 1)
    bad = sorted({k for k in kinds if k not in FAULTS})
    if bad or a.trials < len(kinds) + 2:
        p.error(f"unknown faults {bad}" if bad else f"--trials must be at least {len(kinds) + 2} for {len(kinds)} faults")
    if "cut" in kinds and a.backend != "postgresql":
        p.error("cut faults need --backend postgresql (the proxy speaks PostgreSQL's protocol)")
    if not a.restart_s >= 0:
        p.error(f"--restart-s must be 0 seconds or more (got {a.restart_s:g})")
    before = signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stopped run stops its servers and cluster too
    # Started in the background by a shell, this process ignores SIGINT, and so would the drivers it
    # starts until rknas installs its own handler: a `leave` during a driver's start-up went unheard.
    before_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with tempfile.TemporaryDirectory(prefix="rknas-chaos-") as work:
            report = run(a.backend, a.trials, a.seed, kinds, a.outage, not a.no_baseline, Path(work), deadline_s=a.deadline,
                         table=a.table, concurrency=a.concurrency, time_scale=a.time_scale,
                         restart_s=a.restart_s)
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, before_int)
    lost = f", lost to faults {report.wall_s - report.baseline_wall_s:.0f} s" if report.baseline_wall_s else ""
    by_kind = {k: sum(f["kind"] == k for f in report.faults) for k in FAULTS}
    print("faults by kind: " + ", ".join(f"{k} {n}" for k, n in by_kind.items() if n))
    print(f"{report.backend}: {len(report.faults)} faults injected, {report.counted}/{report.trials} trials counted, "
          f"{report.interrupted} interrupted (recovered), {report.retried_trials} retried after a worker death, "
          f"{report.driver_starts} driver starts; wall {report.wall_s:.0f} s{lost}")
    print(f"recovery of dead drivers' trials: {report.recovery_s} s (limit {report.recovery_limit_s:g} s, plus any "
          f"database outage during it: {sorted(set(report.recovery_outage_s))} s)")
    for name, ok in report.invariants.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    for offender in report.offenders:
        print(f"  to look at: {offender}")
    if a.out:
        a.out.write_text(json.dumps({**asdict(report), "date": datetime.date.today().isoformat()}, indent=2) + "\n")
    if not all(report.invariants.values()):
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
