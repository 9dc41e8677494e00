"""benchmarks/chaos.py, short: a few seeded faults on a small search, and its invariants hold.

The faults are injected at points of the study's progress (counts of finished trials), not
at times, so the run does not depend on the machine's speed.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "chaos.py"


def load():
    spec = importlib.util.spec_from_file_location("chaos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["chaos"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_schedule_is_seeded_and_a_driver_joins_before_it_leaves():
    chaos = load()
    a = chaos.schedule(40, 3, ["driver", "worker", "database", "join", "leave"])
    assert [f.at_finished for f in a] == sorted(f.at_finished for f in a) and 4 <= a[0].at_finished and a[-1].at_finished < 34
    kinds = [f.kind for f in a]
    assert sorted(kinds) == sorted(["driver", "worker", "database", "join", "leave"]) and kinds.index("join") < kinds.index("leave")
    assert [(f.kind, f.at_finished) for f in chaos.schedule(40, 3, ["driver", "worker", "database", "join", "leave"])] == \
        [(f.kind, f.at_finished) for f in a]


def test_several_drivers_join_and_leave_in_turn_and_counts_are_written_kind_times_n():
    chaos = load()
    plan = chaos.schedule(1000, 0, ["join"] * 3 + ["leave"] * 3 + ["node"] * 4 + ["cut"] * 5)
    kinds = [f.kind for f in plan]
    assert len(plan) == 15 and kinds.count("node") == 4 and kinds.count("cut") == 5
    assert all(kinds[i + 1] == "leave" for i, k in enumerate(kinds) if k == "join")  # each join is followed by its leave
    with pytest.raises(SystemExit):  # a cut needs PostgreSQL's wire protocol
        chaos.main(["--backend", "sqlite", "--trials", "20", "--faults", "cut*2"])
    with pytest.raises(SystemExit):
        chaos.main(["--backend", "sqlite", "--trials", "20", "--faults", "worker*two"])


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_negative_restart_allowance_is_one_line_and_exit_2(capsys, value):
    chaos = load()
    with pytest.raises(SystemExit) as exc:
        chaos.main(["--backend", "sqlite", "--trials", "20", "--restart-s", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].endswith(f": error: --restart-s must be 0 seconds or more (got {value})")


def test_a_recovery_may_take_as_long_as_a_database_outage_that_fell_inside_it():
    chaos = load()
    limit = chaos.STALE_S + chaos.RESTART_S
    report = chaos.Report(backend="postgresql", trials=10, seed=0, recovery_limit_s=limit)
    report.recovery_s, report.recovery_outage_s = [6.5, limit + 7.0], [0.0, 8.0]
    assert chaos.recovered_in_time(report)
    report.recovery_outage_s = [0.0, 0.0]  # no outage: 7 s over the limit is late
    assert not chaos.recovered_in_time(report)
    report.recovery_s, report.recovery_outage_s = [2.0], [0.0]  # sooner than staleness allows: a live driver's trials
    assert not chaos.recovered_in_time(report)


def test_a_short_chaos_run_loses_nothing(tmp_path):
    chaos = load()
    report = chaos.main(["--backend", "sqlite", "--trials", "8", "--faults", "worker,driver,database", "--outage", "2",
                         "--no-baseline", "--deadline", "900", "--out", str(tmp_path / "chaos.json"),
                         # How fast a driver restarts is the machine's speed (a busy one took 44 s): here the
                         # upper bound only guards against a recovery that never comes; the lower bound
                         # (no live driver's trial taken before staleness) is checked as in the benchmark.
                         "--restart-s", "600"])
    assert len(report.faults) == 3
    assert report.invariants and all(report.invariants.values()), report
    assert report.counted == 8 and report.running == 0 and report.driver_starts >= 2
