"""benchmarks/bench_tau.py on a tiny digits table: the architectures it picks, its shards, and that it resumes."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import kendalltau
from support.scripts import BENCHMARKS, load_counting
from support.synthetic_bench import TINY_SPACE, make_table

from rknas.search.space import parse_space

SCRIPT = BENCHMARKS / "bench_tau.py"


@pytest.fixture
def tau(monkeypatch):
    return load_counting("bench_tau", monkeypatch)


@pytest.fixture
def table(tmp_path):
    space = parse_space(TINY_SPACE, "test")
    space.in_channels, space.image_size, space.classes = 1, 8, 10
    path = tmp_path / "t.db"
    make_table(path, space, archs=6, seeds=2, epochs=2)
    return path


def test_pick_spreads_over_the_range_ends_included(tau):
    truth = np.array([0.5, 0.9, 0.1, 0.7, 0.3])
    assert tau.pick(truth, 3) == [2, 0, 1]
    assert sorted(tau.pick(truth, 9)) == [0, 1, 2, 3, 4]


def claims(results):
    return sorted(results.with_suffix(".ckpt").glob("*.claim"))


def test_copies_share_the_work_by_claims_and_a_rerun_trains_nothing(tau, table, tmp_path):
    results = tmp_path / "tau.jsonl"
    args = ["--table", str(table), "--archs", "4", "--long-epochs", "1", "--long-subset", "200",
            "--threads", "1", "--results", str(results)]
    ckpts = results.with_suffix(".ckpt")
    ckpts.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live copy holding two claims
    try:
        order = tau_order(tau, table)
        for key in order[:2]:
            (ckpts / f"{key}.claim").write_text(str(other.pid))
        first = tau.main(args)
        assert first["n"] == 2 and len(tau.calls) == 2
        assert [c.stem for c in claims(results)] == sorted(order[:2])  # the live copy's claims stand
    finally:
        other.kill()
        other.wait()
    second = tau.main(args)  # its claimant died: the claims are taken over
    assert len(tau.calls) == 4 and len({t[0].model_dump_json() for t in tau.calls}) == 4
    assert {(e, n) for _, e, n in tau.calls} == {(1, 200)}
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert second["n"] == 4 == len(records)
    want = kendalltau([r["table"] for r in records], [r["long"] for r in records]).statistic
    assert second["kendall_tau"] == pytest.approx(want)
    assert all(0 <= r["long"] <= 1 for r in records)
    again = tau.main(args)
    assert len(tau.calls) == 4 and again["kendall_tau"] == pytest.approx(want)
    assert not list(ckpts.glob("*.pt")) and not claims(results)


def tau_order(tau, table):
    """The claim names of the picked architectures, in the order a copy works through them."""
    bench = tau.load_bench(table)
    rated = [i for i in range(bench.size) if bench.curves[i]]
    chosen = [rated[j] for j in tau.pick(bench.truth[rated], 4)]
    return [hashlib.sha1(tau.run_key(bench.sampled[i], 1, 200).encode()).hexdigest()[:16]
            for i in tau.work_order(bench, chosen)]


def test_work_goes_longest_first(tau, table):
    bench = tau.load_bench(table)
    longest = [max(float(w[-1]) for _, w in bench.curves[i]) for i in tau.work_order(bench, [0, 1, 2, 3])]
    assert longest == sorted(longest, reverse=True) and len(longest) == 4


def test_a_missing_table_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--table", str(tmp_path / "none.db"), "--results",
                           str(tmp_path / "r.jsonl")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such table" in proc.stderr
    assert not (tmp_path / "r.jsonl").exists()


def test_a_claim_is_kept_from_a_live_process_and_taken_from_a_dead_one(tau, tmp_path):
    path = tmp_path / "w.claim"
    assert tau.claim(path) and path.read_text() == str(os.getpid()) and tau.claim(path)
    path.write_text("1")  # init: alive
    assert not tau.claim(path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(str(dead.pid))
    assert tau.claim(path) and path.read_text() == str(os.getpid())
    path.write_text("garbage")
    assert tau.claim(path)
