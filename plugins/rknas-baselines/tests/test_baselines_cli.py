"""The installed package through rknas's command line: entry point, listing, describe."""

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import pytest

from rknas.cli import main
from rknas_baselines.plugin import STRATEGIES


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_describe_reproduces_table2(capsys):
    code, out, _ = run(capsys, "describe", "--framework", "mnist", "--strategy", "preact", "--stages", "1",
                       "--k", "32", "--json")
    info = json.loads(out)
    assert code == 0 and (info["params"], info["flops"]) == (52_234, 8_434_560)


def test_describe_reports_a_too_small_stage_count_in_one_line(capsys):
    code, _, err = run(capsys, "describe", "--strategy", "cliquenet", "--stages", "1", "--k", "8")
    assert code == 2 and "needs stages >= 2" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_entry_point_lists_every_strategy_with_package_and_version():
    try:
        dist = distribution("rknas-baselines")
    except PackageNotFoundError:
        pytest.skip("rknas-baselines is not installed (pip install -e plugins/rknas-baselines)")
    assert [ep.value for ep in dist.entry_points if ep.group == "rknas"] == ["rknas_baselines.plugin"]
    env = {**os.environ, "RKNAS_PLUGINS": "rknas-baselines"}
    proc = subprocess.run([sys.executable, "-m", "rknas.cli", "strategies", "--json"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    for st in STRATEGIES:
        assert rows[st.name]["package"] == "rknas-baselines" and rows[st.name]["version"] == dist.version
    assert rows["I"]["package"] == "rknas"
