"""The read-only commands on a large study, two versions of rknas in turns, run by run.

Usage: python benchmarks/commands_ab.py --storage URL --study NAME --base COMMIT
           [--commands report studies best] [--runs N] [--out FILE.jsonl]

This machine's speed moves through the day (the same command took 2.8 s in one hour and 4.5 s
in the next), so a before/after comparison alternates: BASE checked out into a temporary git
worktree, then the working tree, then BASE again. Each run is a fresh `python -m rknas.cli`
started in an empty folder, so only the chosen tree is on the path, with both trees' bytecode
compiled first, as an installed package has it. Before each pair a fixed pure-Python loop is
timed (`cpu_ref_s`) to show how fast the machine was then. Rows are appended as they are
measured; the medians are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cpu_ref() -> float:
    """Seconds for a fixed pure-Python loop in a fresh interpreter (the machine's speed right now)."""
    code = "import time; t = time.perf_counter(); sum(i * i for i in range(3_000_000)); print(time.perf_counter() - t)"
    return round(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout), 3)


def args_of(command: str, study: str, storage: str, tmp: str) -> list[str]:
    return {
        "report": ["report", "--study", study, "--storage", storage, "-o", f"{tmp}/report.png"],
        "studies": ["studies", "--storage", storage],
        "best": ["best", "--study", study, "--storage", storage, "-o", f"{tmp}/best.yaml"],
    }[command]


def timed(tree: Path, argv: list[str], cwd: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rknas.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:1])} failed in {tree}: {proc.stderr.strip()[-300:]}")
    if "Traceback" in proc.stderr:  # exit 0 with a traceback (a worker that died): not a clean run
        raise SystemExit(f"{' '.join(argv[:1])} printed a traceback in {tree}: {proc.stderr.strip()[-300:]}")
    return round(seconds, 3)


def commit_of(ref: str) -> str:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "--verify", f"{ref}^{{commit}}"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"error: --base {ref!r} is not a commit of this repository (git log shows them)", file=sys.stderr)
        raise SystemExit(2)
    return out.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--base", required=True, help="the commit to compare the working tree against")
    ap.add_argument("--commands", nargs="+", default=["report"], choices=("report", "studies", "best"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "commands_ab.jsonl")
    args = ap.parse_args()
    base, head = commit_of(args.base), commit_of("HEAD")
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "rknas"], capture_output=True,
                                text=True).stdout.strip())
    new_name = head + ("+changes" if dirty else "")
    seconds: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(old), base], check=True)
        try:
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(old / "rknas"), str(REPO / "rknas")], check=True)
            empty = Path(tmp) / "cwd"
            empty.mkdir()
            for run in range(args.runs):
                ref = cpu_ref()
                for command in args.commands:
                    argv = args_of(command, args.study, args.storage, tmp)
                    for name, tree in ((base, old), (new_name, REPO)):
                        s = timed(tree, argv, str(empty))
                        seconds.setdefault((command, name), []).append(s)
                        with args.out.open("a") as f:
                            f.write(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command,
                                                "code": name, "run": run, "seconds": s, "cpu_ref_s": ref,
                                                "storage": args.storage.split(":")[0]}) + "\n")
                print(f"run {run + 1}/{args.runs} (cpu_ref {ref} s): " + ", ".join(
                    f"{c} {n} {seconds[(c, n)][-1]} s" for c in args.commands for n in (base, new_name)), flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    for (command, name), values in seconds.items():
        print(f"{command:8} {name:16} median {statistics.median(values):.2f} s, "
              f"{min(values):.2f}-{max(values):.2f} s over {len(values)} runs")


if __name__ == "__main__":
    main()
