"""`rknas bench build`: a tiny real table (digits, one epoch), continued after an interruption,
refused with other settings; and the table file's own guarantees."""

import gzip
import json
import shutil

import pytest
import yaml
from support.synthetic_bench import TINY_SPACE as SPACE

from rknas.bench.build import check_recipe, draw_architectures
from rknas.bench.table import BenchTable, EpochRow
from rknas.errors import ConfigError
from rknas.search.space import load_space, parse_space


def space_file(tmp_path, **changes):
    raw = {**SPACE, **changes}
    path = tmp_path / "tiny_bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_draws_are_distinct_seeded_and_start_with_start_from():
    space = load_space("fashion_mnist_bench")
    space.in_channels, space.image_size, space.classes = 1, 28, 10
    a = draw_architectures(space, 30, seed=1)
    keys = [space.configs(p)[0].model_dump_json() for _, p in a]
    assert len(set(keys)) == 30
    assert [s for s, _ in a[:6]] == ["start_from"] * 6 and {s for s, _ in a[6:]} == {"sampled"}
    assert a[0][1]["p1_k"] == 24 and a[0][1]["p1_strategy"] == "E"
    assert [p for _, p in draw_architectures(space, 30, seed=1)] == [p for _, p in a]
    assert [p for _, p in draw_architectures(space, 30, seed=2)] != [p for _, p in a]


def test_a_space_with_fewer_architectures_gives_what_it_holds():
    space = parse_space(SPACE, "tiny")
    space.in_channels, space.image_size, space.classes = 1, 8, 10
    # E with 1 or 2 stages, I with 2 stages; k 4 or 8: 6 networks
    assert len(draw_architectures(space, 50, seed=0)) == 6


def test_a_bench_space_fixes_its_training():
    check_recipe(parse_space(SPACE, "tiny"))
    with pytest.raises(ConfigError, match=r"training.lr is searched"):
        check_recipe(parse_space({**SPACE, "training": {"lr": [0.1, 0.2]}}, "tiny"))


def rows(n, acc=0.5):
    return [EpochRow(e, acc, acc - 0.01, 1.0 / e, 2.0 * e) for e in range(1, n + 1)]


def test_a_table_refuses_other_settings_and_keeps_whole_runs(tmp_path):
    path = tmp_path / "t.db"
    with BenchTable.create(path, {"a": 1}) as t:
        t.add_archs([("sampled", {"p1_k": 4}, {"k": [4]}, 100, 1000)])
        t.add_run(1, 0, rows(3))
    with pytest.raises(ConfigError, match=r"built with other settings \(a differ\)"):
        BenchTable.create(path, {"a": 2})
    with BenchTable.open(path) as t:
        assert t.settings == {"a": 1} and t.done() == {(1, 0)} and [r.epoch for r in t.curves()[(1, 0)]] == [1, 2, 3]
        frames = t.frames()
        assert list(frames["curves"]["test_accuracy"]) == pytest.approx([0.49] * 3)
        assert int(frames["archs"]["params"][0]) == 100
    assert not (tmp_path / "t.db-wal").exists()  # closed into one file, ready to gzip
    with open(path, "rb") as src, gzip.open(tmp_path / "t.db.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    with BenchTable.open(tmp_path / "t.db.gz") as t:
        assert t.done() == {(1, 0)}


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00" + b"\x00" * 50, b"not a table at all" * 100])
def test_a_broken_table_is_one_line(tmp_path, content, cli):
    path = tmp_path / "broken.db"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        BenchTable.open(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_a_truncated_table_is_one_line(tmp_path):
    path = tmp_path / "t.db"
    with BenchTable.create(path, {"a": 1}) as t:
        t.add_archs([("sampled", {"p1_k": k}, {"k": [k]}, 100, 1000) for k in range(200)])
        for a in range(1, 200):
            t.add_run(a, 0, rows(4))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ConfigError, match="not a readable benchmark table"):
        t = BenchTable.open(path)
        t.curves()


@pytest.mark.slow
def test_build_a_tiny_table_continue_it_and_refuse_other_settings(ray_local, cli, tmp_path):
    space = space_file(tmp_path)
    out = tmp_path / "tiny.db"
    code, stdout, err = cli("bench", "build", "--space", space, "--archs", "3", "--seeds", "2", "--out", out)
    assert code == 0, err
    assert "3 architectures x 2 seeds, 6 runs (6 new" in stdout
    with BenchTable.open(out) as t:
        assert len(t.archs()) == 3 and len(t.done()) == 6
        curves = t.curves()
        assert all([r.epoch for r in c] == [1, 2] for c in curves.values())
        assert all(0 <= r.test_accuracy <= 1 and r.wall_s > 0 for c in curves.values() for r in c)
        assert all(r.val_loss is not None and r.val_loss > 0 for c in curves.values() for r in c)
        # two seeds of one architecture train differently
        assert curves[(1, 0)][-1].train_loss != curves[(1, 1)][-1].train_loss
        assert {a.source for a in t.archs()} == {"sampled"} and all(a.params > 0 for a in t.archs())
    # An interruption left one run out: the same command runs only that one.
    with BenchTable.create(out, BenchTable.open(out).settings) as t, t.conn:
        t.conn.execute("DELETE FROM runs WHERE arch=2 AND seed=1")
    code, stdout, err = cli("bench", "build", "--space", space, "--archs", "3", "--seeds", "2", "--out", out)
    assert code == 0, err
    assert "(1 new" in stdout
    code, stdout, err = cli("bench", "build", "--space", space, "--archs", "3", "--seeds", "2", "--epochs", "3", "--out", out)
    assert code == 2 and "built with other settings (epochs differ)" in err and len(err.strip().splitlines()) == 1
    with BenchTable.open(out) as t:
        assert len(t.done()) == 6
    # A table built before a space key existed (its stored space lacks it) continues like any other.
    with BenchTable.create(out, BenchTable.open(out).settings) as t, t.conn:
        old = dict(t.settings, space={k: v for k, v in t.settings["space"].items() if k != "sampler_window"}, seeds=2)
        t.conn.execute("UPDATE meta SET value=? WHERE key='settings'", (json.dumps(old, sort_keys=True),))
    # More seeds continue the table: only the new seeds train, the old runs stay as they were.
    code, stdout, err = cli("bench", "build", "--space", space, "--archs", "3", "--seeds", "3", "--out", out)
    assert code == 0, err
    assert "3 architectures x 3 seeds, 9 runs (3 new" in stdout
    with BenchTable.open(out) as t:
        assert sorted(t.done()) == sorted((a, s) for a in (1, 2, 3) for s in (0, 1, 2))
        assert t.curves()[(1, 0)] == curves[(1, 0)]


def test_pack_copies_a_table_a_build_is_still_writing(tmp_path, cli):
    path = tmp_path / "t.db"
    writer = BenchTable.create(path, {"a": 1})  # left open: its runs sit in the WAL, not yet in the file
    writer.add_archs([("sampled", {"p1_k": k}, {"k": [k]}, 100, 1000) for k in (4, 8)])
    writer.add_run(1, 0, rows(3))
    writer.add_run(2, 0, rows(3))
    assert (tmp_path / "t.db-wal").exists()
    code, stdout, err = cli("bench", "pack", "--table", path, "--out", tmp_path / "out" / "t.db.gz")
    assert code == 0, err
    assert "2 architectures with runs, 2 runs" in stdout
    writer.add_run(2, 1, rows(3))  # the build goes on; the copy is the snapshot
    writer.close()
    with BenchTable.open(tmp_path / "out" / "t.db.gz") as t:
        assert t.done() == {(1, 0), (2, 0)} and t.settings == {"a": 1}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t.db.gz"]  # no temporary left


def test_a_table_from_before_val_loss_reads_as_none_and_records_it_once_extended(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with BenchTable.create(path, {"a": 1}) as t:
        t.add_archs([("sampled", {"p1_k": k}, {"k": [k]}, 100, 1000) for k in (4, 8)])
        t.add_run(1, 0, rows(2))
    with sqlite3.connect(path) as conn:  # as tables were built before the column existed
        conn.execute("ALTER TABLE curves DROP COLUMN val_loss")
    packed = tmp_path / "old.db.gz"
    shutil.copy(path, tmp_path / "copy.db")
    with open(tmp_path / "copy.db", "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with BenchTable.open(packed) as t:  # read-only: no column to add, val_loss reads as None
        old = t.curves()
    assert [r.val_loss for r in old[(1, 0)]] == [None, None]
    with BenchTable.create(path, {"a": 1}) as t:  # a build continues it: the column is added
        t.add_run(2, 0, [EpochRow(1, 0.5, 0.4, 1.0, 2.0, val_loss=1.25)])
    with BenchTable.open(path) as t:
        curves = t.curves()
    assert curves[(2, 0)][0].val_loss == 1.25 and curves[(1, 0)] == old[(1, 0)]
