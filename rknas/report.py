"""The plots: a one-page picture of a study (progress, accuracy against size, learning curves,
which parameters mattered by Optuna's importance evaluator), an evaluation's finalists beside
the paper's models, and a benchmark replay's anytime regret."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from rknas.errors import RknasError
from rknas.forked import ForkedWorker, can_fork
from rknas.importance import ImportanceWorker, keep_importances, kept_importances, parameter_importances
from rknas.storage import StudyRecord, TrialRecord
from rknas.storage.bulk import load_trials, tally

if TYPE_CHECKING:
    from rknas.bench.replay import ReplaySummary


PLOTTED = ("val_accuracy_per_epoch", "params")  # the record fields the study picture reads


@dataclass
class StudyPicture:
    """What the study picture shows, read from the study: arrays, so that it crosses to a
    ``Drawer`` in a few milliseconds.

    Attributes:
        title: The figure's title (the study and its trial counts).
        number: Trial numbers of the trained trials (complete or pruned, with a curve), ascending.
        complete: Whether each of them completed (else it was pruned).
        last: Each one's validation accuracy at its last epoch.
        size: Each one's parameter count (0 where unknown).
        curves: Their validation accuracy per epoch, one after the other.
        lengths: How many epochs of ``curves`` are each one's.
        importances: Parameter -> importance, largest first (empty: none to show).
    """

    title: str
    number: np.ndarray
    complete: np.ndarray
    last: np.ndarray
    size: np.ndarray
    curves: np.ndarray
    lengths: np.ndarray
    importances: dict[str, float] = field(default_factory=dict)


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


def study_picture(study: optuna.Study, worker: Optional[ImportanceWorker] = None) -> StudyPicture:
    """Read what the study picture shows.

    The importances are the ones kept with the study when no trial has completed since they
    were computed (``kept_importances``); else they are computed (in ``worker``, or in one
    started here, while the rest is read) and, for a large study with no trial running, kept.

    Args:
        study: The study.
        worker: An ``ImportanceWorker.start()``, or None (one starts here where needed).

    Returns:
        The picture's data.

    Raises:
        RknasError: The study has no trained trial to plot.
    """
    counts = tally(study)
    n_complete = counts.get(TrialState.COMPLETE.name, 0)
    importances = kept_importances(StudyRecord.of(study), n_complete)
    pending, complete = None, []
    if importances is not None:
        if worker is not None:
            worker.close()
    else:
        if worker is None:
            worker = ImportanceWorker.start()  # before the read: scikit-learn loads beside it
        # The completed trials' parameters and values first: fANOVA then runs in the worker
        # while everything else is read, and the picture hardly waits for it.
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
    if importances is None:
        importances = _importances_from(pending, study, complete)
        if not counts.get(TrialState.RUNNING.name, 0) + counts.get(TrialState.WAITING.name, 0):
            keep_importances(study, len(complete), importances)  # a quiet large study's next report reuses them
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    order = [s.name.lower() for s in TrialState]
    flat = [records[t.number].val_accuracy_per_epoch or [] for t in done]
    return StudyPicture(
        title=f"{study.study_name}: " + ", ".join(f"{states[k]} {k}" for k in order if k in states),
        number=np.array([t.number for t in done], dtype=np.int64),
        complete=np.array([t.state == TrialState.COMPLETE for t in done], dtype=bool),
        last=np.array([c[-1] for c in flat], dtype=float),
        size=np.array([records[t.number].params or 0 for t in done], dtype=float),
        curves=np.fromiter((v for c in flat for v in c), dtype=float),
        lengths=np.array([len(c) for c in flat], dtype=np.int64),
        importances=dict(importances),
    )


def plot_study(study: optuna.Study, path: Path, worker: Optional[ImportanceWorker] = None,
               drawer: Optional[Drawer] = None) -> Path:
    """Write a PNG with four panels; readers see at a glance what the search found.

    Args:
        study: The study.
        path: The PNG to write (its folder is created).
        worker: An ``ImportanceWorker.start()`` made before the study was opened, or None.
        drawer: A ``Drawer.start()`` made before the study was opened (the CLI's), or None to
            draw in this process.

    Returns:
        ``path``.

    Raises:
        RknasError: No matplotlib, or no trained trial to plot.
    """
    return drawn(drawer, draw_study, study_picture(study, worker), path)


def draw_study(picture: StudyPicture, path: Path) -> Path:
    """Draw a ``StudyPicture`` as a PNG: progress, accuracy against size, learning curves, importances.

    Each panel draws all trials of a state as one collection, so a study of ten thousand
    trials plots in a second.

    Returns:
        ``path``.

    Raises:
        RknasError: No matplotlib.
    """
    fig = _figure(figsize=(21, 4.6))
    from matplotlib.collections import LineCollection

    p = picture
    colors = {True: "tab:blue", False: "tab:orange"}  # complete, pruned
    labels = {True: "complete", False: "pruned"}
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 0.8]})
    many = len(p.number) > 500
    dot = 6 if many else 18

    ax = axes[0]
    for state in (True, False):
        of = p.complete == state
        ax.scatter(p.number[of].astype(float), p.last[of], c=colors[state], s=dot, label=labels[state])
    best = np.maximum.accumulate(np.where(p.complete, p.last, -np.inf))  # best complete so far
    seen = np.isfinite(best)
    ax.step(p.number[seen], best[seen], where="post", c="k", lw=1.2, label="best complete")
    ax.set(xlabel="trial", ylabel="validation accuracy (last epoch)", title="search progress")
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[1]
    for state in (True, False):
        of = p.complete == state
        ax.scatter(p.size[of], p.last[of], c=colors[state], s=dot)
    order = np.flatnonzero(p.complete)
    order = order[np.argsort(p.size[order], kind="stable")]  # by size, then by trial number
    front = order[p.last[order] > np.maximum.accumulate(np.r_[-1.0, p.last[order]])[:-1]]
    if len(front):  # accuracy/params Pareto front of the completed trials
        ax.step(p.size[front], p.last[front], where="post", c="k", lw=1.2, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set(xscale="log", xlabel="parameters", ylabel="validation accuracy", title="accuracy vs size")
    _count_axis(ax.xaxis)  # 20k, 50k, 100k: read at a glance, and no mathtext to load for 10^5

    ax = axes[2]
    alpha = 0.15 if many else 0.5
    epochs = np.concatenate([np.arange(1, n + 1, dtype=float) for n in p.lengths])
    curves = np.split(np.column_stack([epochs, p.curves]), np.cumsum(p.lengths)[:-1])
    for state in (False, True):  # pruned first, complete on top
        of = [c for c, s in zip(curves, p.complete) if s == state]
        # a curve of one epoch is no line (a point, drawn below where there are few): left out,
        # it would only widen the axes around nothing visible and cost its path
        ax.add_collection(LineCollection([c for c in of if len(c) > 1], colors=colors[state], alpha=alpha, lw=1))
        if not many and of:
            points = np.concatenate(of)
            ax.scatter(points[:, 0], points[:, 1], c=colors[state], s=9, alpha=alpha)
    ax.autoscale_view()
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="learning curves (ASHA rungs prune early)")

    ax = axes[3]
    if p.importances:
        names = list(p.importances)[:12][::-1]
        ax.barh(names, [p.importances[n] for n in names], color="tab:green")
        ax.set(xlabel="importance (fANOVA, validation accuracy)", title="what mattered")
    else:
        ax.text(0.5, 0.5, "needs two completed trials\nwith searched parameters", ha="center", va="center")
        ax.set(xticks=[], yticks=[], title="what mattered")
    fig.suptitle(p.title)
    return _save(fig, path)


def _load_matplotlib() -> None:
    """A drawer's preload: matplotlib's modules, and its fonts read once."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection  # noqa: F401
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, "0")
    fig.canvas.draw()


class Drawer(ForkedWorker):
    """matplotlib in a process forked before the study is opened (``rknas report``'s).

    matplotlib's import (nearly half a second here) runs on the other core while this process
    opens and reads the study; the picture's data then goes over and is drawn there.
    """

    def __init__(self, context: Any = None):
        super().__init__(_load_matplotlib, context, name="rknas-drawer")

    @classmethod
    def start(cls) -> Optional[Drawer]:
        """A drawer, where a fork is safe and gains (Linux, no other thread, two CPUs) and
        matplotlib is not loaded here already; else None."""
        import sys

        return cls() if can_fork() and "matplotlib" not in sys.modules else None


def drawn(drawer: Optional[Drawer], func: Any, *args: Any) -> Any:
    """``func(*args)`` (a module-level plotting function) in ``drawer``, or here where there is
    none or it died (killed, or its matplotlib import failed).

    Raises:
        Exception: What ``func`` raised, wherever it ran.
    """
    if drawer is not None and drawer.submit(func, *args):
        try:
            return drawer.result()
        except EOFError:
            pass
    return func(*args)


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
