"""What the terminal shows: live progress (search, training, evaluation, benchmarks) and the result tables.

The CLI parses arguments and calls the library; everything drawn with rich lives here, so
that a notebook can use the same views and the CLI stays thin.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from rknas.events import BenchListener, EvaluationListener, SearchListener
from rknas.storage.racing import TIE_RULE
from rknas.storage.record import StudyRecord, TrialRecord

if TYPE_CHECKING:
    import optuna

PIPE_WIDTH = 200  # a pipe or file has no width: rich would assume 80 and cut names short


def make_console(stderr: bool = False) -> Console:
    """A console that never truncates: wide when writing to a pipe or a file."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


def mean_std(mean: float, std: float, runs: Optional[list] = None) -> str:
    """``0.9833 ± 0.0021``; one run has no sample std: ``0.9833 (1 seed)``."""
    if runs is not None and len(runs) == 1:
        return f"{mean:.4f} (1 seed)"
    return f"{mean:.4f} ± {std:.4f}"


def table(*headers: str, title: Optional[str] = None, show_header: bool = True) -> Table:
    """A table whose cells wrap rather than end in an ellipsis when the terminal is narrow."""
    return Table(*(Column(h, overflow="fold") for h in headers), title=title, show_header=show_header)


def architecture(network: Optional[dict[str, Any]]) -> str:
    """A compact architecture: ``I2/k32 R3/k24`` (strategy, stages, k per period)."""
    net = network or {}
    return " ".join(f"{s}{n}/k{k}" for s, n, k in zip(net.get("strategy", []), net.get("stages", []), net.get("k", [])))


def _stop(bar: Progress) -> None:
    """Stop a bar that was started; one that never was prints nothing (not even a blank line)."""
    if bar.live.is_started:
        bar.stop()


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


class TrainProgress:
    """`rknas train`'s bar on stderr: epochs done of the total, the last epoch's training loss and accuracy, ETA.

    Nothing is drawn until ``start``, which training calls once its checks passed.
    """

    def __init__(self, console: Console):
        self.bar = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
            TextColumn("{task.fields[last]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task: Optional[TaskID] = None

    def start(self, epochs: int) -> None:
        """Show the bar for a run of ``epochs`` epochs."""
        self.task = self.bar.add_task("training", total=epochs, last="")
        self.bar.start()

    def epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Epoch ``epoch`` (1-based) finished with these metrics."""
        if self.task is not None:
            last = f"train loss {metrics['train_loss']:.4f}, train accuracy {metrics['train_accuracy']:.4f}"
            self.bar.update(self.task, completed=epoch, last=last)

    def stop(self) -> None:
        """End the live display (leaves the printed bar); nothing at all when it never started."""
        _stop(self.bar)


class SearchProgress(SearchListener):
    """Live terminal view of a search: counts, best so far, ETA, one line per finished trial.

    Pass it as ``SearchOptions.on_event``; call ``stop()`` when the search returns.
    """

    def __init__(self, console: Console):
        self.console = console
        self.bar = _progress(console, "stats")
        self.task: Optional[Any] = None
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.running: set[str] = set()
        self.epochs: dict[str, int] = {}  # the last epoch each running trial reported
        self.best: Optional[float] = None
        self.best_runs: Optional[int] = None  # with racing: the runs behind ``best``
        self.t0 = 0.0
        self.done_now = 0
        self.remaining = 0
        self.waiting_for: Optional[int] = None

    def already_done(self, *, finished: int, target: int) -> None:
        self.console.print(f"The study already has {finished} finished trials (target {target}); nothing to run. "
                           f"--trials is the study's total, not trials to add: --trials {finished + target} runs "
                           f"{target} more.")

    def start(self, *, study: str, storage: str, finished: int, target: int, remaining: int, concurrency: int,
              stale: int, space: str, warm_start: int = 0, driver: str = "", revision: int = 0,
              changes: Optional[dict[str, list]] = None, deadline: Optional[float] = None, table: str = "",
              val_images: int = 0) -> None:
        if stale:
            self.console.print(
                f"[yellow]{stale} trial(s) of a search that stopped recording heartbeats (killed) "
                "were recovered: FAIL, interrupted, not counted."
            )
        if changes:
            changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
            self.console.print(f"[yellow]Continuing as space revision {revision} (--allow-changes): {changed}")
        if warm_start:
            self.console.print(f"Warm start: the first {warm_start} trial(s) are the known designs of start_from.")
        if table:
            self.console.print(f"[yellow]Trials are answered from {table}: nothing is trained.")
        self.console.print(
            f"Study [bold]{study}[/] in {storage}: {finished} of {target} trials finished, "
            f"running {remaining} more, {concurrency} at a time."
        )
        if val_images:
            self.console.print(
                f"Trials are scored on {val_images:,} validation images: accuracy moves in steps of "
                f"{100 / val_images:.2g} points, so trials can tie; a tie goes to {TIE_RULE}."
            )
        self.t0, self.remaining = time.time(), remaining
        self.bar.start()
        self.task = self.bar.add_task(space, total=target, completed=finished, stats="starting Ray")
        self._refresh()

    def trial_start(self, *, trial_id: str) -> None:
        self.running.add(trial_id)
        self._refresh()

    def trial_result(self, *, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(result.get("epoch"), int) and trial_id in self.running:
            self.epochs[trial_id] = result["epoch"]
            self._refresh()

    def trial_end(self, *, trial_id: str, number: int, state: str, record: TrialRecord, values: Any,
                  note: Optional[str] = None) -> None:
        self._trial_line(trial_id, number, state, record, values, note)
        self._refresh(advance=1)

    def trial_retry(self, *, trial_id: str, number: int, reason: str, attempt: int) -> None:
        self.bar.console.print(
            f"  [yellow]trial {number}: {reason}; running it again from its last finished epoch (attempt {attempt})"
        )
        self._refresh()

    def trial_repeat(self, *, number: int, repeat_of: int, repeat: int) -> None:
        self.bar.console.print(f"  racing: trial {number}'s configuration (first run: trial {repeat_of}) would lead; "
                               f"it runs again on a new seed (repeat {repeat}) before it is believed")
        self._refresh()

    def incumbent(self, *, number: int, value: float, runs: int) -> None:
        self.best_runs = runs
        self.best = value
        self._refresh()

    def recovered(self, *, numbers: list[int]) -> None:
        self.bar.console.print(
            f"  [yellow]trial(s) {', '.join(map(str, numbers))} of a search that stopped "
            "recording heartbeats were recovered (FAIL, interrupted)"
        )
        self._refresh()

    def interrupted_trials(self, *, numbers: list[int]) -> None:
        self.bar.console.print(
            f"  [yellow]trial(s) {', '.join(map(str, numbers))} were stopped before "
            "they finished (FAIL, interrupted, not counted)"
        )
        self._refresh()

    def progress(self, *, finished: int, running: int, target: int) -> None:
        # The study's count, other searches' trials included.
        if self.task is not None:
            self.bar.update(self.task, completed=finished)
        self._refresh()

    def waiting(self, *, running: int, finished: int, target: int) -> None:
        if running != self.waiting_for:
            self.waiting_for = running
            self.bar.console.print(
                f"  waiting for {running} trial(s) running in other searches of this study "
                f"({finished} of {target} finished); trials of a killed search are recovered "
                "once its heartbeats are stale"
            )
        self._refresh()

    def _refresh(self, advance: int = 0) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=advance, stats=self._stats())

    def _trial_line(self, trial_id: str, number: int, state: str, record: TrialRecord, values: Any,
                    note: Optional[str]) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1
        self.running.discard(trial_id)
        self.epochs.pop(trial_id, None)
        self.done_now += 1
        size = f"{record.params / 1e3:.1f}K params" if record.params else ""
        if record.gpu_memory_mib is not None:
            size += f", GPU {record.gpu_memory_mib:,.0f} MiB"
        if state == "COMPLETE":
            acc = values[0] if isinstance(values, list) else values
            if self.best_runs is None:  # with racing, the incumbent event says what is best
                self.best = acc if self.best is None else max(self.best, acc)
            what = f"[green]COMPLETE[/] val {acc:.4f}"
        elif state == "PRUNED":
            why = record.constraint_violation or record.diverged or f"stopped at epoch {record.pruned_at_epoch}"
            last = record.last_val_accuracy
            what = f"[yellow]PRUNED[/] {why}" + (f", val {last:.4f}" if last is not None else "")
        else:
            what = f"[red]FAIL[/] {record.fail_reason or ''}"
        if note:
            what = f"[red]{state}[/] {note}"
        self.bar.console.print(f"  trial {number:>4}  {what}  {architecture(record.network)}  {size}")

    def _stats(self) -> str:
        eta = ""
        if self.done_now:
            left = (time.time() - self.t0) / self.done_now * max(0, self.remaining - self.done_now)
            eta = f" | ETA {int(left // 60)}m{int(left % 60):02d}s"
        best = f"{self.best:.4f}" if self.best is not None else "-"
        if self.best is not None and self.best_runs is not None:
            best += f" (mean of {self.best_runs})"
        epochs = sorted(self.epochs.values(), reverse=True)
        at = f" at epoch {', '.join(map(str, epochs[:8]))}{', ...' if len(epochs) > 8 else ''}" if epochs else ""
        return (
            f"running {len(self.running)}{at} | pruned {self.counts['PRUNED']} | failed {self.counts['FAIL']} "
            f"| best val {best}{eta}"
        )

    def stop(self) -> None:
        """End the live display (leaves the printed lines); nothing at all when it never started."""
        _stop(self.bar)


def pareto_table(study: optuna.Study) -> Table:
    """The Pareto set of a multi-objective study, most accurate first."""
    from rknas.storage.queries import candidates, full  # Optuna: only when a study is shown

    metrics = StudyRecord.of(study).metrics or []
    out = table("trial", *metrics, "params", "FLOPs", "architecture", title=f"Pareto set of {study.study_name}")
    for t in full(study, candidates(study, lean=True)):
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
            _best_cell(r),
        )
    return out


def _best_cell(r: dict[str, Any]) -> str:
    if r["best_val_accuracy"] is None:
        return "-"
    runs = r.get("best_runs") or 1
    return f"{r['best_val_accuracy']:.4f}" + (f" (mean of {runs})" if runs > 1 else "")


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
    noise = summary.get("noise") or {}
    vs_best = noise.get("vs_best") or {}
    caption = None
    if noise.get("sigma") is not None:
        caption = (f"seed spread (pooled std) {noise['sigma'] * 100:.2f} points: telling 0.3 points apart takes "
                   f"about {noise['seeds_for_delta']} seeds per model; 'within spread': not significant at 5%")
    out = table("#", "model", "source", "params", "FLOPs", "test accuracy per seed", "mean ± std", "vs best", title=title)
    out.caption = caption
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
            mean_std(m["mean"], m["std"], m["test_accuracy"]),
            _vs_best(vs_best.get(m["name"]), i == 1),
        )
    return out


def _vs_best(entry: Optional[dict[str, Any]], first: bool) -> str:
    if entry is None:
        return ""
    if first:
        return "best"
    diff = f"{entry['difference'] * 100:+.2f} pts"
    return {True: f"{diff}, within spread", False: diff, None: f"{diff}, spread unknown (1 seed)"}[entry["within_noise"]]


class EvaluationProgress(EvaluationListener):
    """Live view of ``rknas evaluate``: runs done of all, and the current model, seed and epoch.

    Pass it as ``EvaluateOptions.on_event``; call ``stop()`` when the evaluation returns.
    """

    def __init__(self, console: Console, note: Optional[str] = None):
        self.console = console
        self.note = note  # said on stderr once the evaluation's checks passed (e.g. a busy machine)
        self.bar = _progress(console, "info")
        self.runs: Optional[Any] = None
        self.epochs: Optional[Any] = None

    def start(self, *, study: str, runs: int, done: int, models: int, seeds: list[int], epochs: int, out: str,
              recipe_trial: int, device: str) -> None:
        if self.note and done < runs:  # a note on training speed; nothing trains when every run is done
            print(self.note, file=sys.stderr)
        self.console.print(
            f"Evaluating {models} model(s) x {len(seeds)} seed(s), {epochs} epochs each, "
            f"recipe of trial {recipe_trial}" + (f", on {device}" if device else "") + f"; runs in {out}"
            + (f" ({done} finished earlier, skipped)" if done else "")
        )
        self.bar.start()
        self.runs = self.bar.add_task("runs", total=runs, completed=done, info="")

    def run_start(self, *, name: str, seed: int, epochs: int) -> None:
        if self.epochs is not None:
            self.bar.remove_task(self.epochs)
        self.epochs = self.bar.add_task(f"{name} seed {seed}", total=epochs, info="epoch 0")

    def epoch(self, *, name: str, seed: int, epoch: int, epochs: int, metrics: dict[str, Any]) -> None:
        if self.epochs is not None:
            info = f"epoch {epoch}/{epochs}: loss {metrics['train_loss']:.4f} acc {metrics['train_accuracy']:.4f}"
            self.bar.update(self.epochs, completed=epoch, info=info)

    def run_end(self, *, name: str, seed: int, test_accuracy: float, skipped: bool) -> None:
        if skipped:
            return
        if self.epochs is not None:
            self.bar.remove_task(self.epochs)
            self.epochs = None
        if self.runs is not None:
            self.bar.update(self.runs, advance=1)
        self.bar.console.print(f"  {name} seed {seed}: test accuracy {test_accuracy:.4f}")

    def stop(self) -> None:
        """End the live display (leaves the printed lines); nothing at all when it never started."""
        _stop(self.bar)


class BenchProgress(BenchListener):
    """Live view of ``rknas bench build``: runs done of all, with an ETA from this session's pace.

    Pass it as ``BenchBuildOptions.on_event``; call ``stop()`` when the build returns.
    """

    def __init__(self, console: Console):
        self.console = console
        self.bar = _progress(console, "info")
        self.task: Optional[Any] = None
        self.t0 = 0.0
        self.done_now = 0
        self.left = 0
        self.concurrency = 1

    def start(self, *, table: str, archs: int, seeds: int, epochs: int, runs: int, done: int, concurrency: int) -> None:
        self.console.print(
            f"Table {table}: {archs} architectures x {seeds} seeds, {epochs} epochs per run, {concurrency} at a time"
            + (f"; {done} of {runs} runs recorded earlier" if done else "")
        )
        self.t0, self.left, self.concurrency = time.time(), runs - done, concurrency
        self.bar.start()
        self.task = self.bar.add_task("runs", total=runs, completed=done, info="ETA after the first run")

    def run_end(self, *, arch: int, seed: int, params: int, status: str, test_accuracy: float, train_s: float) -> None:
        self.done_now += 1
        self.left -= 1
        pace = (time.time() - self.t0) / self.done_now
        info = f"ETA {self.left * pace / 60:.0f} min" if self.left else "done"
        if self.task is not None:
            self.bar.update(self.task, advance=1, info=info)
        what = f"test accuracy {test_accuracy:.4f}" if status == "ok" else status
        self.bar.console.print(f"  arch {arch} ({params:,} params) seed {seed}: {what}, {train_s:.0f} s")

    def stop(self) -> None:
        """End the live display (leaves the printed lines); nothing at all when it never started."""
        _stop(self.bar)


class ReplayProgress(BenchListener):
    """Live view of ``rknas bench replay``: repeats done per strategy.

    Pass it as ``BenchReplayOptions.on_event``; call ``stop()`` when the replay returns.
    """

    def __init__(self, console: Console, quiet: bool = False):
        self.bar = _progress(console, "info")
        self.tasks: dict[str, Any] = {}
        self.quiet = quiet

    def replay_repeat(self, *, strategy: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if not self.tasks:
            self.bar.start()
        if strategy not in self.tasks:
            self.tasks[strategy] = self.bar.add_task(strategy, total=total, info="repeats")
        self.bar.update(self.tasks[strategy], completed=done)

    def stop(self) -> None:
        """End the live display; nothing at all when it never started."""
        _stop(self.bar)


def replay_table(result: dict[str, Any], target: float) -> Table:
    """Per strategy: median time to the target regret, regret at the budget, trials per search, and
    how far the score a search reports overstates its network (one objective)."""
    summaries = result["summaries"]
    first = summaries[0]
    judged = "on seeds the search never saw" if first.judge == "unseen" else "on every seed, the ones it saw included"
    columns = ["strategy", f"median time to within {target * 100:.1f} points", "reached", "regret at budget (median [IQR])",
               "trials per search"]
    single = any(v is not None for s in summaries for v in s.overstatement)
    if single:
        columns.append("reported score over its judged mean (median)")
    out = table(*columns, title=f"{result['table']}: {result['archs']} architectures, best {result['best']:.4f}; "
                f"{first.repeats} replays of {first.budget_s / 60:.0f} simulated min on {first.workers} workers; "
                f"judged {judged}")
    random_t = next((s.median_time_to_target() for s in summaries if s.strategy == "random"), None)
    for s in summaries:
        t = s.median_time_to_target()
        shown = "not within budget" if t is None else f"{t / 60:.1f} min"
        if t is not None and random_t is not None and s.strategy != "random":
            shown += f" ({random_t / t:.1f}x random)"
        reached = sum(x is not None for x in s.time_to_target)
        final = sorted(s.final_regret)
        q = [final[int(p * (len(final) - 1))] * 100 for p in (0.5, 0.25, 0.75)]
        row = [s.strategy, shown, f"{reached}/{s.repeats}", f"{q[0]:.2f} [{q[1]:.2f}, {q[2]:.2f}] points",
               f"{sorted(s.trials)[len(s.trials) // 2]}"]
        if single:
            over = s.median_overstatement()
            row.append("-" if over is None else f"{over * 100:+.2f} points")
        out.add_row(*row)
    noise = result.get("noise") or {}
    if noise.get("sigma") is not None:
        out.caption = (f"the table's seed spread (pooled std over {noise['networks']} architectures): "
                       f"{noise['sigma'] * 100:.2f} points; telling {target * 100:.1f} points apart takes about "
                       f"{noise['seeds_for_delta']} seeds per network")
        if noise.get("sigma_typical") is not None:
            out.caption += (f"; a typical architecture's spread {noise['sigma_typical'] * 100:.2f} points "
                            f"({noise['seeds_for_delta_typical']} seeds; {noise['unstable']} unstable architectures)")
    return out
