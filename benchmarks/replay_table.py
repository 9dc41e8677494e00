"""Replay JSON files (``rknas bench replay --out``) as one Markdown table, for RESULTS.md.

One row per strategy and file: the judging, median regret at the budget, how many repeats end
within the target, the median time to the target (minutes; "-" when fewer than half reach it),
the median overstatement of the score the search reports, and the median trial count.

Usage: python benchmarks/replay_table.py benchmarks/replay/judged/*.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def rows(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    target = float(data.get("target") or 0.003)
    out = []
    for s in data["strategies"]:
        final = s["final_regret"]
        within = sum(r is not None and r <= target + 1e-12 for r in final)
        ttt = s.get("median_time_to_target")
        over = s.get("median_overstatement")
        out.append("| " + " | ".join([
            path.stem, s["strategy"], s.get("judge") or data.get("judge") or "all", f"{s['budget_s'] / 60:g}",
            f"{100 * statistics.median(final):.2f}", f"{within}/{len(final)}",
            "-" if ttt is None else f"{ttt / 60:.1f}",
            "-" if over is None else f"{100 * over:.2f}",
            f"{statistics.median(s['trials']):g}",
        ]) + " |")
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="replay JSON files (rknas bench replay --out)")
    args = p.parse_args(argv)
    table = []
    for path in args.files:
        try:
            table += rows(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # one line, exit 2, as the CLI does
            print(f"error: {path} is not a replay JSON (rknas bench replay --out): {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            raise SystemExit(2) from None
    print("| file | strategy | judged on | budget (min) | median regret (pts) | within target | "
          "median time to target (min) | median overstatement (pts) | trials |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main(sys.argv[1:])
