"""A study of thousands of trials: what each trial costs the driver and the database as the study grows.

Runs one table-backed search (``rknas search --table``: the real driver, Tune, ASHA, sampler,
storage and heartbeats; the training looked up) on the shipped table, continued in chunks of
``--chunk`` trials up to ``--trials``, as a user continues any search (the same options, a
larger ``--trials``). Each chunk appends one JSON line to ``--out`` as it ends, so a run stopped
part-way keeps its figures and ``--resume`` continues the same study:

- ``driver_cpu_ms_per_trial``: the driver process's CPU time (all its threads) per trial;
- ``wall_ms_per_trial``: the chunk's wall time per trial;
- ``db_ms_per_trial``: time the driver spent waiting on its database (every statement, timed
  with SQLAlchemy's cursor events);
- ``sampler_ms_per_proposal``: time in the sampler (``sample_relative`` +
  ``sample_independent`` + ``infer_relative_search_space``) per trial;
- ``rss_mb``: the driver's resident memory at the chunk's end (and its peak).

With ``--every N``, a ``progress`` line every N ended trials inside a chunk too (the same
figures over those N trials): one long chunk then shows how the driver's memory and cost
move within one ``rknas search`` run, which is what a user's long search is.

At the end (or with ``--commands-only``), how long ``rknas studies``, ``best``, ``report`` and
``evaluate``'s planning (``plan_evaluation``: finalists, recipe, data, runs) take on the study,
each in its own process.

Usage (a private PostgreSQL server, as the tests start one; or --storage URL / sqlite):
    python benchmarks/scale.py --backend postgresql --trials 10000 --chunk 1000 --concurrency 16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))  # the private PostgreSQL server of the tests
TABLE = REPO / "benchmarks" / "tables" / "fashion_mnist_bench.db.gz"
STUDY = "scale"


class Meters:
    """Time the driver spends in database statements and in the sampler, accumulated."""

    def __init__(self) -> None:
        self.db_s = 0.0
        self.sampler_s = 0.0
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        import optuna
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        starts: dict[int, float] = {}

        @event.listens_for(Engine, "before_cursor_execute")
        def _before(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: Any) -> None:
            starts[id(cursor)] = time.perf_counter()

        @event.listens_for(Engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: Any) -> None:
            t = starts.pop(id(cursor), None)
            if t is not None:
                self.db_s += time.perf_counter() - t

        for cls in {optuna.samplers.TPESampler, optuna.samplers.RandomSampler, optuna.samplers.NSGAIISampler}:
            for name in ("sample_relative", "sample_independent", "infer_relative_search_space"):
                self._time(cls, name)
        self._installed = True

    def _time(self, cls: type, name: str) -> None:
        real = getattr(cls, name)
        meters = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                meters.sampler_s += time.perf_counter() - t

        setattr(cls, name, timed)


def census(top: int = 12) -> dict[str, int]:
    """The driver's live Python objects by type, most numerous first (after a full collection)."""
    import collections
    import gc

    gc.collect()
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    return {**dict(counts.most_common(top)), "total": sum(counts.values())}


def trimmed_rss_mb() -> float:
    """RSS after glibc hands its free memory back (``malloc_trim``): what is left is held, not fragmentation."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_mb()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_commands(url: str, out: Path, data_root: str | None) -> dict[str, float]:
    """Wall seconds of the read-only commands on the study, each a fresh process (as a user runs them)."""
    rknas = str(Path(sys.executable).with_name("rknas"))
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in {
            "studies": ["studies", "--storage", url],
            "best": ["best", "--study", STUDY, "--storage", url, "-o", f"{tmp}/best.yaml"],
            "report": ["report", "--study", STUDY, "--storage", url, "-o", f"{tmp}/report"],
        }.items():
            t = time.perf_counter()
            proc = subprocess.run([rknas, *args], capture_output=True, text=True, timeout=600)
            times[name] = round(time.perf_counter() - t, 2)
            if proc.returncode != 0:
                times[name + " (exit)"] = proc.returncode
                print(name, proc.stderr[-500:], file=sys.stderr)
        # evaluate's planning (finalists, recipe, data, runs): everything before its first training run
        plan = ("from rknas.evaluate import plan_evaluation; from rknas.options import EvaluateOptions; "
                f"p = plan_evaluation(EvaluateOptions(study={STUDY!r}, storage={url!r}, epochs=1, out={tmp + '/ev'!r}, "
                f"data_root={data_root!r})); "
                "print(len(p.runs))")
        for name, cmd in {"evaluate (planning)": [sys.executable, "-c", plan]}.items():
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            times[name] = round(time.perf_counter() - t, 2)
            if proc.returncode != 0:
                times[name + " (exit)"] = proc.returncode
                print(name, proc.stderr[-500:], file=sys.stderr)
    with out.open("a") as f:
        f.write(json.dumps({"kind": "commands", "date": time.strftime("%Y-%m-%dT%H:%M"), "commit": _commit(),
                            "seconds": times}) + "\n")
    return times


_COMMIT: list[str] = []


def _commit() -> str:
    """The code measured: HEAD when this run started (figures from before and after a change sit in one file)."""
    if not _COMMIT:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        _COMMIT.append(out.stdout.strip() or "unknown")
    return _COMMIT[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    ap.add_argument("--storage", help="an existing storage URL instead of a new private server or file")
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--scale", type=float, default=0.002, help="real seconds per recorded second of the table")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "scale.jsonl")
    ap.add_argument("--commands-only", action="store_true")
    ap.add_argument("--pg-dir", type=Path, help="keep the private PostgreSQL server's files here; a later run continues "
                                                 "the same study from them")
    ap.add_argument("--data-root", help="Fashion-MNIST's files, for timing evaluate's planning")
    ap.add_argument("--sampler-window", type=int, help="continue with the space's sampler_window set to this (a new "
                                                         "space revision, as --allow-changes makes it)")
    ap.add_argument("--every", type=int, help="also a progress line every N ended trials within a chunk")
    ap.add_argument("--census", action="store_true", help="after each chunk, count the driver's live Python objects by "
                                                          "type and measure RSS after malloc_trim (where its memory goes)")
    args = ap.parse_args()
    _commit()  # the code this process imports

    server = None
    url = args.storage
    if url is None and args.backend == "postgresql":
        server, url = _server(args.pg_dir)
    elif url is None:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='rknas-scale-')}/scale.db"
    try:
        if not args.commands_only:
            chunks(args, url)
        print(run_commands(url, args.out, args.data_root), flush=True)
    finally:
        if server is not None:
            server.halt() if args.pg_dir else server.stop()


def _server(pg_dir: Path | None) -> tuple[Any, str]:
    """The tests' private PostgreSQL server; with ``pg_dir``, one whose files outlive this run."""
    import shutil

    from rknas_pgserver import PostgresServer, _free_port

    server = PostgresServer()
    if pg_dir is None:
        return server.start(), server.create_database()
    shutil.rmtree(server.root, ignore_errors=True)
    pg_dir.mkdir(parents=True, exist_ok=True)
    server.root, server.data = pg_dir, pg_dir / "data"
    if server.as_root:
        shutil.chown(pg_dir, "nobody")
    if server.data.exists():
        server.port = _free_port()
        server.resume()
        return server, server.url("scale")
    server.start()
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE scale")
    return server, server.url("scale")


class Progress:
    """A ``progress`` line every ``--every`` ended trials of a chunk (a search listener)."""

    def __init__(self, args: argparse.Namespace, meters: Meters, study_trials: int):
        self.args, self.meters, self.base, self.ended = args, meters, study_trials, 0
        self.last = self._now()

    def _now(self) -> tuple[float, float, float, float]:
        return time.process_time(), time.perf_counter(), self.meters.db_s, self.meters.sampler_s

    def __call__(self, kind: str, data: dict) -> None:
        if kind != "trial_end":
            return
        self.ended += 1
        if self.ended % self.args.every:
            return
        now, n = self._now(), self.args.every
        cpu, wall, db, sampler = (1000 * (a - b) / n for a, b in zip(now, self.last))
        self.last = now
        row = {"kind": "progress", "date": time.strftime("%Y-%m-%dT%H:%M"), "commit": _commit(),
               "backend": self.args.backend, "concurrency": self.args.concurrency, "scale": self.args.scale,
               "sampler_window": self.args.sampler_window, "trials_in_study": self.base + self.ended,
               "driver_cpu_ms_per_trial": round(cpu, 1), "wall_ms_per_trial": round(wall, 1),
               "db_ms_per_trial": round(db, 1), "sampler_ms_per_proposal": round(sampler, 1),
               "rss_mb": round(rss_mb(), 1),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        with self.args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)


def _count(url: str) -> int:
    """The study's trials, counted in SQL: reading them whole would itself add hundreds of MB to
    this process, the driver whose memory the rows report (the first runs' chunk rows did)."""
    import optuna

    from rknas.storage.bulk import tally

    return sum(tally(optuna.load_study(study_name=STUDY, storage=url)).values())


def chunks(args: argparse.Namespace, url: str) -> None:
    from rknas.search.runner import SearchOptions, run_search

    meters = Meters()
    meters.install()
    try:  # a continued run counts from the study's trials, not from 0
        study_trials = _count(url)
    except KeyError:
        study_trials = 0
    space = "fashion_mnist_bench"
    if args.sampler_window is not None:
        import yaml

        raw = yaml.safe_load((REPO / "search_spaces" / "fashion_mnist_bench.yaml").read_text())
        raw["sampler_window"] = args.sampler_window
        space = str(Path(tempfile.mkdtemp(prefix="rknas-scale-")) / "fashion_mnist_bench_window.yaml")
        Path(space).write_text(yaml.safe_dump(raw))
    while study_trials < args.trials:
        target = min(args.trials, study_trials + args.chunk)
        cpu0, wall0, db0, s0 = time.process_time(), time.perf_counter(), meters.db_s, meters.sampler_s
        result = run_search(SearchOptions(on_event=Progress(args, meters, study_trials) if args.every else None,
            space=space, allow_changes=args.sampler_window is not None, table=TABLE, time_scale=args.scale, trials=target,
            storage=url,
            study=STUDY, concurrency=args.concurrency, cpus_per_trial=max(0.01, 2 / args.concurrency),
            heartbeat_interval=10, stale_after=120))
        n = _count(url)
        added = max(1, n - study_trials)
        row = {
            "kind": "chunk", "date": time.strftime("%Y-%m-%dT%H:%M"), "commit": _commit(), "backend": url.split(":", 1)[0],
            "concurrency": args.concurrency, "scale": args.scale, "sampler_window": args.sampler_window,
            "finished": result.finished, "trials_in_study": n,
            "trials_added": added,
            "driver_cpu_ms_per_trial": round(1000 * (time.process_time() - cpu0) / added, 1),
            "wall_ms_per_trial": round(1000 * (time.perf_counter() - wall0) / added, 1),
            "db_ms_per_trial": round(1000 * (meters.db_s - db0) / added, 1),
            "sampler_ms_per_proposal": round(1000 * (meters.sampler_s - s0) / added, 1),
            "rss_mb": round(rss_mb(), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if args.census:
            row["python_objects"] = census()
            row["rss_mb_after_malloc_trim"] = round(trimmed_rss_mb(), 1)
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)
        study_trials = n


if __name__ == "__main__":
    main()
