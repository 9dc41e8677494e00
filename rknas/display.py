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


def _progress(console: Console, field: str) -> Progress:
    """A bar with done/total, elapsed time, and a text column fed from the task's ``field``."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{{task.fields[{field}]}}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class SearchProgress:
    """Live terminal view of a search: counts, best so far, ETA, one line per finished trial.

    Pass it as ``SearchOptions.on_event``; call ``stop()`` when the search returns.
    """

    def __init__(self, console: Console):
        self.console = console
        self.progress = _progress(console, "stats")
        self.task: Optional[Any] = None
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.running: set[str] = set()
        self.best: Optional[float] = None
        self.t0 = 0.0
        self.done_now = 0
        self.remaining = 0
        self.waiting_for: Optional[int] = None

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "already_done":
            self.console.print(
                f"The study already has {data['finished']} finished trials (target {data['target']}); nothing to run."
            )
        elif kind == "start":
            if data["stale"]:
                self.console.print(
                    f"[yellow]{data['stale']} trial(s) of a search that stopped recording heartbeats (killed) "
                    "were recovered: FAIL, interrupted, not counted."
                )
            if data.get("changes"):
                changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in data["changes"].items())
                self.console.print(f"[yellow]Continuing as space revision {data['revision']} (--allow-changes): {changed}")
            if data.get("warm_start"):
                self.console.print(f"Warm start: the first {data['warm_start']} trial(s) are the known designs of start_from.")
            self.console.print(
                f"Study [bold]{data['study']}[/] in {data['storage']}: {data['finished']} of {data['target']} trials finished, "
                f"running {data['remaining']} more, {data['concurrency']} at a time."
            )
            self.t0, self.remaining = time.time(), data["remaining"]
            self.progress.start()
            self.task = self.progress.add_task(
                data["space"], total=data["target"], completed=data["finished"], stats="starting Ray"
            )
        elif kind == "trial_start":
            self.running.add(data["trial_id"])
        elif kind == "trial_end":
            self._trial_end(data)
        elif kind == "trial_retry":
            self.progress.console.print(
                f"  [yellow]trial {data['number']}: {data['reason']}; running it again from its last finished epoch "
                f"(attempt {data['attempt']})"
            )
        elif kind == "recovered":
            self.progress.console.print(
                f"  [yellow]trial(s) {', '.join(map(str, data['numbers']))} of a search that stopped "
                "recording heartbeats were recovered (FAIL, interrupted)"
            )
        elif kind == "interrupted_trials":
            self.progress.console.print(
                f"  [yellow]trial(s) {', '.join(map(str, data['numbers']))} were stopped before "
                "they finished (FAIL, interrupted, not counted)"
            )
        elif kind == "progress":  # the study's count, other searches' trials included
            if self.task is not None:
                self.progress.update(self.task, completed=data["finished"])
        elif kind == "waiting":
            if data["running"] != self.waiting_for:
                self.waiting_for = data["running"]
                self.progress.console.print(
                    f"  waiting for {data['running']} trial(s) running in other searches of this study "
                    f"({data['finished']} of {data['target']} finished); trials of a killed search are recovered "
                    "once its heartbeats are stale"
                )
        if self.task is not None:
            self.progress.update(self.task, advance=1 if kind == "trial_end" else 0, stats=self._stats())

    def _trial_end(self, data: dict) -> None:
        state, record = data["state"], data["record"]
        self.counts[state] = self.counts.get(state, 0) + 1
        self.running.discard(data.get("trial_id", ""))
        self.done_now += 1
        size = f"{record.params / 1e3:.1f}K params" if record.params else ""
        if record.gpu_memory_mib is not None:
            size += f", GPU {record.gpu_memory_mib:,.0f} MiB"
        if state == "COMPLETE":
            acc = data["values"][0] if isinstance(data["values"], list) else data["values"]
            self.best = acc if self.best is None else max(self.best, acc)
            what = f"[green]COMPLETE[/] val {acc:.4f}"
        elif state == "PRUNED":
            why = record.constraint_violation or record.diverged or f"stopped at epoch {record.pruned_at_epoch}"
            last = record.last_val_accuracy
            what = f"[yellow]PRUNED[/] {why}" + (f", val {last:.4f}" if last is not None else "")
        else:
            what = f"[red]FAIL[/] {record.fail_reason or ''}"
        if data.get("note"):
            what = f"[red]{state}[/] {data['note']}"
        self.progress.console.print(f"  trial {data['number']:>4}  {what}  {architecture(record.network)}  {size}")

    def _stats(self) -> str:
        eta = ""
        if self.done_now:
            left = (time.time() - self.t0) / self.done_now * max(0, self.remaining - self.done_now)
            eta = f" | ETA {int(left // 60)}m{int(left % 60):02d}s"
        best = f"{self.best:.4f}" if self.best is not None else "-"
        return (
            f"running {len(self.running)} | pruned {self.counts['PRUNED']} | failed {self.counts['FAIL']} | best val {best}{eta}"
        )

    def stop(self) -> None:
        """End the live display (leaves the printed lines)."""
        self.progress.stop()


def pareto_table(study: optuna.Study) -> Table:
    """The Pareto set of a multi-objective study, most accurate first."""
    metrics = StudyRecord.of(study).metrics or []
    out = table("trial", *metrics, "params", "FLOPs", "architecture", title=f"Pareto set of {study.study_name}")
    for t in candidates(study):
        r = TrialRecord.of(t)
        out.add_row(
            str(t.number), *[f"{v:.4g}" for v in t.values], f"{r.params or 0:,}", f"{r.flops or 0:,}", architecture(r.network)
        )
    return out


def studies_table(rows: list[dict[str, Any]], url: str) -> Table:
    """One row per study summary (``storage.summarize``)."""
    out = table("study", "space", "objectives", "trials", "states", "best val acc", title=url)
    for r in rows:
        out.add_row(
            r["study"],
            str(r["space"]),
            ", ".join(f"{m} ({d[:3]})" for m, d in zip(r["objectives"], r["directions"])),
            str(r["trials"]),
            ", ".join(f"{k.lower()} {v}" for k, v in r["counts"].items()),
            f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-",
        )
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
    for key in (
        "framework",
        "strategy",
        "stages",
        "k",
        "steps",
        "classes",
        "in_channels",
        "image_size",
        "attention",
        "multiscale",
        "width",
        "dropout",
    ):
        out.add_row(key, str(info[key]))
    out.add_row("params", f"{info['params']:,} ({info['params'] / 1e6:.3f} M)")
    out.add_row("FLOPs", f"{info['flops']:,} ({info['flops'] / 1e9:.4f} G)")
    return out


def rerun_table(result: Any) -> Table:
    """Recorded against reproduced validation accuracy per epoch (``rknas.search.rerun.RerunResult``)."""
    out = table(
        "epoch",
        "recorded",
        "reproduced",
        "",
        title=(
            f"trial {result.trial} of {result.study} ({result.state}, seed {result.seed}), rerun on {result.device} "
            f"with {result.threads} thread(s)"
        ),
    )
    for i in range(max(len(result.recorded), len(result.reproduced))):
        rec = result.recorded[i] if i < len(result.recorded) else None
        rep = result.reproduced[i] if i < len(result.reproduced) else None
        out.add_row(
            str(i + 1),
            "-" if rec is None else f"{rec:.6f}",
            "-" if rep is None else f"{rep:.6f}",
            "[green]=[/]" if rec == rep else "[red]differs[/]",
        )
    if result.recorded_val_loss is not None and result.reproduced_val_loss is not None:
        same = "equal" if result.recorded_val_loss == result.reproduced_val_loss else "differ"
        out.caption = (
            f"val loss after the last epoch: recorded {result.recorded_val_loss!r}, "
            f"reproduced {result.reproduced_val_loss!r} ({same})"
        )
    return out


def evaluation_table(summary: dict[str, Any], title: Optional[str] = None) -> Table:
    """Evaluated models, best mean test accuracy first (``rknas.evaluate.Evaluation.summary``)."""
    if title is None:
        images = (summary.get("data") or {}).get("train_images")
        on = f" on {images:,} images" if isinstance(images, int) else ""
        title = (
            f"test accuracy after {summary.get('epochs')} epochs{on} (recipe of trial {summary.get('recipe_trial')}), "
            f"seeds {', '.join(map(str, summary.get('seeds', [])))}"
        )
    out = table("#", "model", "source", "params", "FLOPs", "test accuracy per seed", "mean ± std", title=title)
    ranked = sorted(summary.get("models", []), key=lambda m: -m["mean"])
    for i, m in enumerate(ranked, 1):
        source = f"trial {m['trial']}" if m.get("trial") is not None else m["source"]
        out.add_row(
            str(i),
            f"{m['name']} ({m['architecture']})",
            source,
            f"{m['params']:,}",
            f"{m['flops']:,}",
            ", ".join(f"{a:.4f}" for a in m["test_accuracy"]),
            f"{m['mean']:.4f} ± {m['std']:.4f}",
        )
    return out


class EvaluationProgress:
    """Live view of ``rknas evaluate``: runs done of all, and the current model, seed and epoch.

    Pass it as ``on_event`` of ``rknas.evaluate.evaluate``; call ``stop()`` when it returns.
    """

    def __init__(self, console: Console):
        self.console = console
        self.progress = _progress(console, "info")
        self.runs: Optional[Any] = None
        self.epochs: Optional[Any] = None

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "start":
            self.console.print(
                f"Evaluating {data['models']} model(s) x {len(data['seeds'])} seed(s), {data['epochs']} epochs each, "
                f"recipe of trial {data['recipe_trial']}, on {data['device']}; runs in {data['out']}"
                + (f" ({data['done']} finished earlier, skipped)" if data["done"] else "")
            )
            self.progress.start()
            self.runs = self.progress.add_task("runs", total=data["runs"], completed=data["done"], info="")
        elif kind == "run_start":
            if self.epochs is not None:
                self.progress.remove_task(self.epochs)
            self.epochs = self.progress.add_task(f"{data['name']} seed {data['seed']}", total=data["epochs"], info="epoch 0")
        elif kind == "epoch" and self.epochs is not None:
            m = data["metrics"]
            info = f"epoch {data['epoch']}/{data['epochs']}: loss {m['train_loss']:.4f} acc {m['train_accuracy']:.4f}"
            self.progress.update(self.epochs, completed=data["epoch"], info=info)
        elif kind == "run_end" and not data["skipped"]:
            if self.epochs is not None:
                self.progress.remove_task(self.epochs)
                self.epochs = None
            if self.runs is not None:
                self.progress.update(self.runs, advance=1)
            self.progress.console.print(f"  {data['name']} seed {data['seed']}: test accuracy {data['test_accuracy']:.4f}")

    def stop(self) -> None:
        """End the live display (leaves the printed lines)."""
        self.progress.stop()
