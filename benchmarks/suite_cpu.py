"""A pytest plugin: the machine's busy CPU seconds around each test (run the suite in one process).

    PYTHONPATH=benchmarks .venv/bin/python -m pytest -q -p suite_cpu     # rows in $SUITE_CPU_OUT

Each test appends ``{"id", "cpu", "wall"}`` to ``$SUITE_CPU_OUT`` (default ``suite_cpu.jsonl``).
The reading is machine-wide (``/proc/stat``), so it counts the test's subprocesses and Ray workers,
and also anything else running meanwhile: run it on an otherwise idle machine, in one process.
"""

import json
import os
import time

import pytest

HZ = os.sysconf("SC_CLK_TCK")
OUT = os.environ.get("SUITE_CPU_OUT", "suite_cpu.jsonl")


def busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / HZ  # all but idle and iowait


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    cpu, wall = busy_s(), time.time()
    yield
    with open(OUT, "a") as f:
        f.write(json.dumps({"id": item.nodeid, "cpu": round(busy_s() - cpu, 2), "wall": round(time.time() - wall, 2)}) + "\n")
