"""A one-page picture of a study: progress, accuracy against size, learning curves."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from rknas.errors import RknasError


def plot_study(study: optuna.Study, path: Path) -> Path:
    """Write a PNG with three panels; readers see at a glance what the search found."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RknasError("plots need matplotlib: pip install 'rknas[plot]'") from None
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.user_attrs.get("val_accuracy_per_epoch")]
    if not done:
        raise RknasError(f"study {study.study_name!r} has no trained trial to plot yet")
    colors = {TrialState.COMPLETE: "tab:blue", TrialState.PRUNED: "tab:orange"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))

    ax = axes[0]
    best, xs, ys = None, [], []
    for t in sorted(done, key=lambda t: t.number):
        acc = t.user_attrs["val_accuracy_per_epoch"][-1]
        ax.scatter(t.number, acc, c=colors[t.state], s=18)
        if t.state == TrialState.COMPLETE:
            best = acc if best is None else max(best, acc)
        if best is not None:
            xs.append(t.number)
            ys.append(best)
    ax.step(xs, ys, where="post", c="k", lw=1.2, label="best complete")
    ax.set(xlabel="trial", ylabel="validation accuracy (last epoch)", title="search progress")
    ax.scatter([], [], c="tab:blue", label="complete")
    ax.scatter([], [], c="tab:orange", label="pruned")
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[1]
    for t in done:
        ax.scatter(t.user_attrs.get("params", 0), t.user_attrs["val_accuracy_per_epoch"][-1], c=colors[t.state], s=18)
    complete = sorted((t for t in done if t.state == TrialState.COMPLETE), key=lambda t: t.user_attrs.get("params", 0))
    front, top = [], -1.0
    for t in complete:  # accuracy/params Pareto front of the completed trials
        acc = t.user_attrs["val_accuracy_per_epoch"][-1]
        if acc > top:
            front.append((t.user_attrs.get("params", 0), acc))
            top = acc
    if front:
        ax.step(*zip(*front), where="post", c="k", lw=1.2, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set(xscale="log", xlabel="parameters", ylabel="validation accuracy", title="accuracy vs size")

    ax = axes[2]
    for t in done:
        curve = t.user_attrs["val_accuracy_per_epoch"]
        ax.plot(range(1, len(curve) + 1), curve, c=colors[t.state], alpha=0.5, lw=1, marker="o", ms=3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="epoch", ylabel="validation accuracy", title="learning curves (ASHA rungs prune early)")

    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
    fig.suptitle(f"{study.study_name}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
