"""What one TPE proposal costs as a study grows, and what bounds it.

Optuna's TPE reads every finished trial on each proposal, so its cost grows with the study
(benchmarks/RESULTS.md, "A study of thousands of trials": 70 -> 184 ms per proposal between
trials 1,000 and 8,000). This replays one long search of the shipped table in memory (the
replay's simulator: 16 workers, ASHA, no time budget, ``--trials`` trials) once per sampler
setting, and times the sampler's own calls per block of trials. No database and no Ray: what
is measured is the sampler alone.

    python benchmarks/tpe_cost.py --trials 4000 --block 500

Each block appends one line to ``benchmarks/tpe_cost.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "benchmarks" / "tables" / "fashion_mnist_bench.db.gz"


class Timed:
    """A sampler whose calls are timed; everything else is the wrapped sampler's."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.seconds, self.proposals = inner, 0.0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _timed(self, name: str, *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return getattr(self.inner, name)(*args)
        finally:
            self.seconds += time.perf_counter() - t

    def infer_relative_search_space(self, *args: Any) -> Any:
        self.proposals += 1
        return self._timed("infer_relative_search_space", *args)

    def sample_relative(self, *args: Any) -> Any:
        return self._timed("sample_relative", *args)

    def sample_independent(self, *args: Any) -> Any:
        return self._timed("sample_independent", *args)

    def before_trial(self, *args: Any) -> Any:
        return self._timed("before_trial", *args)

    def after_trial(self, *args: Any) -> Any:
        return self._timed("after_trial", *args)


def run_setting(bench: Any, setting: str, trials: int, block: int) -> list[tuple[int, float]]:
    """One long simulated search with one sampler setting: (proposals, sampler seconds) every ``block`` proposals."""
    import optuna

    import rknas.search.samplers as samplers
    from rknas.bench.simulator import parse_strategy, simulate

    name, _, option = setting.partition(":")
    real, original_ask = samplers.make_sampler, optuna.Study.ask
    made: list[Timed] = []
    marks: list[tuple[int, float]] = []

    def make(sampler: str, seed: int, objectives: int, known: Any = None) -> Any:
        if option.startswith("n_ei_candidates="):
            inner: Any = optuna.samplers.TPESampler(n_startup_trials=5, seed=seed, n_ei_candidates=int(option.split("=")[1]))
        else:
            inner = real(sampler, seed, objectives, known)
        if option.startswith("window="):
            inner = samplers.windowed(inner, int(option.split("=")[1]))
        made.append(Timed(inner))
        return made[-1]

    def ask(self: Any, *a: Any, **k: Any) -> Any:
        if made[-1].proposals % block == 0:
            marks.append((made[-1].proposals, made[-1].seconds))
        return original_ask(self, *a, **k)

    samplers.make_sampler = make  # type: ignore[assignment]
    optuna.Study.ask = ask  # type: ignore[method-assign]
    try:
        simulate(bench, parse_strategy(f"{name}+asha", [name]), math.inf, workers=16, seed=0, max_trials=trials)
    finally:
        samplers.make_sampler = real  # type: ignore[assignment]
        optuna.Study.ask = original_ask  # type: ignore[method-assign]
    return [*marks, (made[-1].proposals, made[-1].seconds)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--block", type=int, default=500)
    ap.add_argument("--settings", nargs="+", default=["tpe", "tpe:n_ei_candidates=8", "tpe:window=1000"])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "tpe_cost.jsonl")
    args = ap.parse_args()

    from rknas.bench.tableview import load_bench

    bench = load_bench(TABLE)
    for setting in args.settings:
        wall = time.perf_counter()
        marks = run_setting(bench, setting, args.trials, args.block)
        with args.out.open("a") as f:
            for (n0, s0), (n1, s1) in zip(marks, marks[1:]):
                if n1 > n0:
                    row = {"date": time.strftime("%Y-%m-%dT%H:%M"), "setting": setting, "trials_from": n0, "trials_to": n1,
                           "sampler_ms_per_proposal": round(1000 * (s1 - s0) / (n1 - n0), 1)}
                    f.write(json.dumps(row) + "\n")
                    print(row, flush=True)
        print(setting, "wall", round(time.perf_counter() - wall, 1), "s", flush=True)


if __name__ == "__main__":
    main()
