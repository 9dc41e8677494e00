"""The plots: a one-page picture of a study (progress, accuracy against size, learning curves,
which parameters mattered by Optuna's importance evaluator), an evaluation's finalists beside
the paper's models, and a benchmark replay's anytime regret."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from rknas.errors import RknasError
from rknas.importance import ImportanceWorker, parameter_importances
from rknas.storage import TrialRecord
from rknas.storage.bulk import load_trials

if TYPE_CHECKING:
    from rknas.bench.replay import ReplaySummary


PLOTTED = ("val_accuracy_per_epoch", "params")  # the record fields the study picture reads


def _read_or_close(study: optuna.Study, worker: Optional[ImportanceWorker], **lean: Any) -> list[FrozenTrial]:
    """``load_trials(study, **lean)``; a failed read closes the importance worker."""
    try:
        return load_trials(study, **lean)
    except BaseException:
        if worker is not None:
            worker.close()
        raise


def _importances_from(pending: Optional[ImportanceWorker], study: optuna.Study,
                      complete: list[FrozenTrial]) -> dict[str, float]:
    """The worker's answer, or the importances computed here when there is no worker or it died."""
    if pending is not None:
        try:
            return pending.result()
        except (EOFError, OSError):  # the worker died (out of memory, killed): compute them here instead
            pass
    return parameter_importances(study, complete)


def plot_study(study: optuna.Study, path: Path, worker: Optional[ImportanceWorker] = None) -> Path:
    """Write a PNG with four panels; readers see at a glance what the search found.

    Each panel draws all trials of a state as one collection, so a study of ten thousand
    trials plots in seconds. ``worker`` is an ``ImportanceWorker.start()`` made before the study
    was opened (the CLI's); with None, one starts here where it can. Returns ``path``; raises
    ``RknasError`` without matplotlib or with no trained trial to plot.
    """
    fig = _figure(figsize=(21, 4.6))
    from matplotlib.collections import LineCollection

    if worker is None:
        worker = ImportanceWorker.start()  # before the read: scikit-learn loads beside it
    # The completed trials' parameters and values first: fANOVA then runs in the worker while
    # everything else is read and drawn here, and the picture hardly waits for it.
    complete = _read_or_close(study, worker, states=(TrialState.COMPLETE,), user_keys=())
    pending = worker.importances(study, complete) if worker is not None else None
    trials = _read_or_close(study, pending, user_keys=PLOTTED, params=False)
    records = {t.number: TrialRecord.of(t) for t in trials}
    done = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   and records[t.number].val_accuracy_per_epoch), key=lambda t: t.number)
    if not done:
        if pending is not None:
            pending.close()
        raise RknasError(f"study {study.study_name!r} has no trained trial to plot yet")
    colors = {TrialState.COMPLETE: "tab:blue", TrialState.PRUNED: "tab:orange"}
    labels = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 0.8]})
    last = {t.number: records[t.number].val_accuracy_per_epoch[-1] for t in done}
    size = {t.number: records[t.number].params or 0 for t in done}
    dot = 18 if len(done) <= 500 else 6


    ax = axes[0]
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        of = [t.number for t in done if t.state == state]
        ax.scatter(_array(of), _array([last[n] for n in of]), c=colors[state], s=dot, label=labels[state])
    best, xs, ys = None, [], []
    for t in done:
        if t.state == TrialState.COMPLETE:
            best = last[t.number] if best is None else max(best, last[t.number])
        if best is not None:
            xs.append(t.number)
            ys.append(best)
    ax.step(xs, ys, where="post", c="k", lw=1.2, label="best complete")
    ax.set(xlabel="trial", ylabel="validation accuracy (last epoch)", title="search progress")
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[1]
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        of = [t.number for t in done if t.state == state]
        ax.scatter(_array([size[n] for n in of]), _array([last[n] for n in of]), c=colors[state], s=dot)
    front, top = [], -1.0
    for n in sorted((t.number for t in done if t.state == TrialState.COMPLETE), key=lambda n: size[n]):
        if last[n] > top:  # accuracy/params Pareto front of the completed trials
            front.append((size[n], last[n]))
            top = last[n]
    if front:
        ax.step(*zip(*front), where="post", c="k", lw=1.2, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set(xscale="log", xlabel="parameters", ylabel="validation accuracy", title="accuracy vs size")
    _count_axis(ax.xaxis)  # 20k, 50k, 100k: read at a glance, and no mathtext to load for 10^5

    ax = axes[2]
    alpha = 0.5 if len(done) <= 500 else 0.15
    for state in (TrialState.PRUNED, TrialState.COMPLETE):
        curves = [list(enumerate(records[t.number].val_accuracy_per_epoch, 1)) for t in done if t.state == state]
        # a curve of one epoch is no line (a point, drawn below where there are few): left out,
        # it would only widen the axes around nothing visible and cost its path
        ax.add_collection(LineCollection([c for c in curves if len(c) > 1], colors=colors[state], alpha=alpha, lw=1))
        if len(done) <= 500:
            points = [p for c in curves for p in c]
            ax.scatter(_array([p[0] for p in points]), _array([p[1] for p in points]), c=colors[state], s=9,
                       alpha=alpha)
    ax.autoscale_view()
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="learning curves (ASHA rungs prune early)")

    ax = axes[3]
    importances = _importances_from(pending, study, complete)
    if importances:
        names = list(importances)[:12][::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:green")
        ax.set(xlabel="importance (fANOVA, validation accuracy)", title="what mattered")
    else:
        ax.text(0.5, 0.5, "needs two completed trials\nwith searched parameters", ha="center", va="center")
        ax.set(xticks=[], yticks=[], title="what mattered")

    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    order = [s.name.lower() for s in TrialState]
    fig.suptitle(f"{study.study_name}: " + ", ".join(f"{counts[k]} {k}" for k in order if k in counts))
    return _save(fig, path)


def plot_evaluation(models: list[dict], path: Path, title: str = "") -> Path:
    """Test accuracy (mean, error bar: std over seeds) against params of evaluated models.

    Args:
        models: ``rknas evaluate`` summaries: ``name``, ``source``, ``params``, ``mean``, ``std``.
        path: The PNG to write.
        title: The figure's title.

    Returns:
        ``path``. Finalists (trials) are blue circles, named models and config files orange squares.
    """
    fig = _figure(figsize=(7.5, 5))
    ax = fig.subplots()
    for kind, marker, color, label in ((("trial",), "o", "tab:blue", "finalist (trial)"),
                                       (("model", "config"), "s", "tab:orange", "named model")):
        group = [m for m in models if m["source"] in kind]
        if group:
            ax.errorbar([m["params"] for m in group], [m["mean"] for m in group], yerr=[m["std"] for m in group],
                        fmt=marker, color=color, capsize=4, ms=7, ls="none", label=label)
        for m in group:
            ax.annotate(m["name"], (m["params"], m["mean"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set(xscale="log", xlabel="parameters", ylabel="test accuracy (mean ± std over seeds)", title=title)
    _count_axis(ax.xaxis)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def replay_figure(summaries: list[ReplaySummary], title: str, pareto: bool, target: float) -> Any:
    """Anytime regret, median and quartiles over repeats, one line per strategy (a matplotlib Figure).

    ``target`` (a fraction of accuracy, as ``--target``) is drawn and labelled as it is.
    """
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for s in summaries:
        x = np.array(s.grid) / 60.0
        y = np.array(s.median) * (1 if pareto else 100)
        (line,) = ax.plot(x, y, label=f"{s.strategy} (median of {s.repeats})")
        ax.fill_between(x, np.array(s.q25) * (1 if pareto else 100), np.array(s.q75) * (1 if pareto else 100),
                        color=line.get_color(), alpha=0.2)
    if not pareto:
        points = f"{target * 100:g} point{'' if target * 100 == 1 else 's'}"
        ax.axhline(target * 100, color="grey", linestyle="--", linewidth=1, label=f"target: {points}")
    ax.set_xlabel(f"simulated time (minutes, {summaries[0].workers} workers)")
    ax.set_ylabel("hypervolume regret" if pareto else "regret (test accuracy points below the table's best)")
    ax.set_yscale("symlog", linthresh=0.1 if not pareto else 0.01)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_replay(summaries: list[ReplaySummary], path: Path, title: str, pareto: bool, target: float) -> None:
    """Write ``replay_figure`` to ``path`` (PNG)."""
    replay_figure(summaries, title, pareto, target).savefig(path, dpi=110)


def _count_axis(axis: Any) -> None:
    """A log axis of counts labelled 10k, 20k, 50k, 100k...: never the crowded minor labels matplotlib
    puts on a range inside one decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _count(v)))
    axis.set_minor_formatter(NullFormatter())


def _count(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:g}{unit}"
    return f"{v:g}"


def _array(values: list) -> np.ndarray:
    """Floats for matplotlib: handed a list, scatter checks every element for a mask (a tenth of
    a second for ten thousand points)."""
    return np.asarray(values, dtype=float)


def _figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` drawn by Agg, made without pyplot.

    Nothing global to close or to leak in a long-lived process (a notebook, a server), and
    pyplot's import (a fifth of a second here) is not paid. Raises ``RknasError`` without
    matplotlib.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RknasError("plots need matplotlib: pip install 'rknas[plot]'") from None
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    """Write a figure as PNG (creating its folder)."""
    fig.tight_layout()
    # tight_layout leaves a placeholder layout engine behind, and savefig draws the whole figure
    # once more for any engine (a fifth of a second with ten thousand learning curves): the
    # layout is done, so no engine.
    fig.set_layout_engine(None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
