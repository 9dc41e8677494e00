"""How long `rknas` takes to answer commands that only read, against `python -c pass` in the same run.

Usage: python benchmarks/cli_startup.py [--runs N] [--out FILE.jsonl]

Each command runs N times, warm (after one untimed run); the median wall time is printed and,
with --out, appended as one JSON line with the date, the commit and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "rknas --help": [sys.executable, "-m", "rknas.cli", "--help"],
    "rknas search --help": [sys.executable, "-m", "rknas.cli", "search", "--help"],
    "rknas strategies": [sys.executable, "-m", "rknas.cli", "strategies"],
    "rknas bench replay --help": [sys.executable, "-m", "rknas.cli", "bench", "replay", "--help"],
}


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RKNAS_PLUGINS": ""})
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.runs < 1:
        print("error: --runs must be at least 1", file=sys.stderr)
        return 2
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    row = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit,
           "machine": f"{platform.node()} {os.cpu_count()} cores", "runs": args.runs, "median_s": {}}
    for name, cmd in COMMANDS.items():
        timed(cmd)  # warm the file cache
        row["median_s"][name] = round(statistics.median(timed(cmd) for _ in range(args.runs)), 3)
        print(f"{name:28s} {row['median_s'][name]:.3f} s")
    if args.out:
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
