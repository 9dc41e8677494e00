"""benchmarks/bench_tau.py on a tiny digits table: the architectures it picks, its shards, and that it resumes."""

import json

import numpy as np
import pytest
from scipy.stats import kendalltau
from support.scripts import load_counting
from support.synthetic_bench import TINY_SPACE, make_table

from rknas.search.space import parse_space


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


def test_two_shards_share_the_work_and_a_rerun_trains_nothing(tau, table, tmp_path, capsys):
    results = tmp_path / "tau.jsonl"
    common = ["--table", str(table), "--archs", "4", "--long-epochs", "1", "--long-subset", "200",
              "--threads", "1", "--results", str(results)]
    first = tau.main([*common, "--shard", "0/2"])
    assert first["n"] == 2 and len(tau.calls) == 2
    second = tau.main([*common, "--shard", "1/2"])
    assert len(tau.calls) == 4 and len({t[0].model_dump_json() for t in tau.calls}) == 4
    assert {(e, n) for _, e, n in tau.calls} == {(1, 200)}
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert second["n"] == 4 == len(records)
    want = kendalltau([r["table"] for r in records], [r["long"] for r in records]).statistic
    assert second["kendall_tau"] == pytest.approx(want)
    assert all(0 <= r["long"] <= 1 for r in records)
    again = tau.main([*common])
    assert len(tau.calls) == 4 and again["kendall_tau"] == pytest.approx(want)
    assert not list(results.with_suffix(".ckpt").glob("*.pt"))


@pytest.mark.parametrize("shard", ["2/2", "x", "1/0"])
def test_a_bad_shard_is_refused(tau, table, tmp_path, shard, capsys):
    with pytest.raises(SystemExit) as exc:
        tau.main(["--table", str(table), "--results", str(tmp_path / "r.jsonl"), "--shard", shard])
    assert exc.value.code == 2 and "--shard must be I/N" in capsys.readouterr().err
