"""What the terminal shows: live search progress and the result tables.

The CLI parses arguments and calls the library; everything drawn with rich lives here, so
that a notebook can use the same views and the CLI stays thin.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

import optuna
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from rknas.storage import StudyRecord, TrialRecord, candidates

PIPE_WIDTH = 200  # a pipe or file has no width: rich would assume 80 and cut names short


def make_console(stderr: bool = False) -> Console:
    """A console that never truncates: wide when writing to a pipe or a file."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


def table(*headers: str, title: Optional[str] = None, show_header: bool = True) -> Table:
    """A table whose cells wrap rather than end in an ellipsis when the terminal is narrow."""
    return Table(*(Column(h, overflow="fold") for h in headers), title=title, show_header=show_header)


def architecture(network: Optional[dict[str, Any]]) -> str:
    """A compact architecture: ``I2/k32 R3/k24`` (strategy, stages, k per period)."""
    net = network or {}
    return " ".join(f"{s}{n}/k{k}" for s, n, k in zip(net.get("strategy", []), net.get("stages", []), net.get("k", [])))


class SearchProgress:
    """Live terminal view of a search: counts, best so far, ETA, one line per finished trial.

    Pass it as ``SearchOptions.on_event``; call ``stop()`` when the search returns.
    """

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self.task: Optional[Any] = None
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.running: set[str] = set()
        self.best: Optional[float] = None
        self.t0 = 0.0
        self.done_now = 0
        self.remaining = 0

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "already_done":
            self.console.print(f"The study already has {data['finished']} finished trials (target {data['target']}); nothing to run.")
        elif kind == "start":
            if data["stale"]:
                self.console.print(f"[yellow]{data['stale']} trial(s) left RUNNING by an earlier search were marked FAIL (interrupted).")
            self.console.print(
                f"Study [bold]{data['study']}[/] in {data['storage']}: {data['finished']} of {data['target']} trials finished, "
                f"running {data['remaining']} more, {data['concurrency']} at a time."
            )
            self.t0, self.remaining = time.time(), data["remaining"]
            self.progress.start()
            self.task = self.progress.add_task(data["space"], total=data["target"], completed=data["finished"], stats="starting Ray")
        elif kind == "trial_start":
            self.running.add(data["trial_id"])
        elif kind == "trial_end":
            self._trial_end(data)
        if self.task is not None:
            self.progress.update(self.task, advance=1 if kind == "trial_end" else 0, stats=self._stats())

    def _trial_end(self, data: dict) -> None:
        state, record = data["state"], data["record"]
        self.counts[state] = self.counts.get(state, 0) + 1
        self.running.discard(data.get("trial_id", ""))
        self.done_now += 1
        size = f"{record.params / 1e3:.1f}K params" if record.params else ""
        if state == "COMPLETE":
            acc = data["values"][0] if isinstance(data["values"], list) else data["values"]
            self.best = acc if self.best is None else max(self.best, acc)
            what = f"[green]COMPLETE[/] val {acc:.4f}"
        elif state == "PRUNED":
            why = record.constraint_violation or f"stopped at epoch {record.pruned_at_epoch}"
            last = record.last_val_accuracy
            what = f"[yellow]PRUNED[/] {why}" + (f", val {last:.4f}" if last is not None else "")
        else:
            what = f"[red]FAIL[/] {record.fail_reason or ''}"
        self.progress.console.print(f"  trial {data['number']:>4}  {what}  {architecture(record.network)}  {size}")

    def _stats(self) -> str:
        eta = ""
        if self.done_now:
            left = (time.time() - self.t0) / self.done_now * max(0, self.remaining - self.done_now)
            eta = f" | ETA {int(left // 60)}m{int(left % 60):02d}s"
        best = f"{self.best:.4f}" if self.best is not None else "-"
        return (f"running {len(self.running)} | pruned {self.counts['PRUNED']} | failed {self.counts['FAIL']} | "
                f"best val {best}{eta}")

    def stop(self) -> None:
        """End the live display (leaves the printed lines)."""
        self.progress.stop()


def pareto_table(study: optuna.Study) -> Table:
    """The Pareto set of a multi-objective study, most accurate first."""
    metrics = StudyRecord.of(study).metrics or []
    out = table("trial", *metrics, "params", "FLOPs", "architecture", title=f"Pareto set of {study.study_name}")
    for t in candidates(study):
        r = TrialRecord.of(t)
        out.add_row(str(t.number), *[f"{v:.4g}" for v in t.values], f"{r.params or 0:,}", f"{r.flops or 0:,}",
                    architecture(r.network))
    return out


def studies_table(rows: list[dict[str, Any]], url: str) -> Table:
    """One row per study summary (``storage.summarize``)."""
    out = table("study", "space", "objectives", "trials", "states", "best val acc", title=url)
    for r in rows:
        out.add_row(r["study"], str(r["space"]), ", ".join(f"{m} ({d[:3]})" for m, d in zip(r["objectives"], r["directions"])),
                      str(r["trials"]), ", ".join(f"{k.lower()} {v}" for k, v in r["counts"].items()),
                    f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-")
    return out


def rows_table(rows: list[dict[str, Any]], columns: dict[str, str], title: Optional[str] = None) -> Table:
    """A table of dict rows: ``columns`` maps a row key to its header."""
    out = table(*columns.values(), title=title)
    for r in rows:
        out.add_row(*(", ".join(map(str, r[k])) if isinstance(r[k], list) else str(r[k]) for k in columns))
    return out


def network_table(info: dict[str, Any]) -> Table:
    """A network's settings, params and FLOPs (``rknas.describe``)."""
    out = table("key", "value", title=info["name"], show_header=False)
    for key in ("framework", "strategy", "stages", "k", "steps", "classes", "in_channels", "image_size", "attention",
                "multiscale", "width", "dropout"):
        out.add_row(key, str(info[key]))
    out.add_row("params", f"{info['params']:,} ({info['params'] / 1e6:.3f} M)")
    out.add_row("FLOPs", f"{info['flops']:,} ({info['flops'] / 1e9:.4f} G)")
    return out
