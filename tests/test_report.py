"""The study picture and parameter importances, on a synthetic study (no training, no Ray)."""

import re

import optuna

from rknas.report import parameter_importances, plot_study
from rknas.storage import StudyRecord, TrialRecord


def synthetic_study(n=12, storage=None):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0), storage=storage)
    for key, value in StudyRecord(metrics=["val_accuracy"]).user_attrs().items():
        study.set_user_attr(key, value)
    for _ in range(n):
        t = study.ask()
        lr = t.suggest_float("lr", 0.01, 1.0, log=True)
        k = t.suggest_int("p1_k", 8, 32)
        acc = 0.5 + 0.4 * lr  # accuracy follows lr, not k
        for key, value in TrialRecord(val_accuracy_per_epoch=[acc / 2, acc], params=100 * k).user_attrs().items():
            t.set_user_attr(key, value)
        study.tell(t, acc)
    return study


def test_importances_find_the_parameter_that_matters():
    imp = parameter_importances(synthetic_study())
    assert list(imp)[0] == "lr" and imp["lr"] > 0.8
    assert parameter_importances(synthetic_study(n=1)) == {}


def test_plot_study_writes_a_png(tmp_path):
    path = plot_study(synthetic_study(), tmp_path / "r.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def captured_figures(monkeypatch):
    """The figures the report module saves, kept open for inspection (matplotlib objects, not pixels)."""
    from rknas import report

    figures = []
    real = report._save

    def keep(fig, path):
        figures.append({"axes": [(a.get_title(), a.get_xlabel(), a.get_ylabel(), a) for a in fig.axes],
                        "suptitle": fig._suptitle.get_text() if fig._suptitle else ""})
        return real(fig, path)

    monkeypatch.setattr(report, "_save", keep)
    return figures


def test_plot_study_shows_progress_size_curves_and_importances(tmp_path, monkeypatch):
    import numpy as np

    figures = captured_figures(monkeypatch)
    study = synthetic_study()
    plot_study(study, tmp_path / "r.png")
    (fig,) = figures
    titles = [t for t, *_ in fig["axes"]]
    assert titles == ["search progress", "accuracy vs size", "learning curves (ASHA rungs prune early)", "what mattered"]
    assert fig["suptitle"] == f"{study.study_name}: 12 complete"
    progress, size, curves, importance = (a for *_, a in fig["axes"])
    accs = [t.value for t in study.trials]
    # one point per trial, and the best-so-far line never goes down and ends at the best trial
    points = np.concatenate([c.get_offsets() for c in progress.collections if len(c.get_offsets())])
    assert sorted(points[:, 1].tolist()) == sorted(accs)
    (best_line,) = [ln for ln in progress.get_lines() if ln.get_label() == "best complete"]
    ys = best_line.get_ydata()
    assert all(b >= a for a, b in zip(ys, ys[1:])) and ys[-1] == max(accs)
    assert size.get_xscale() == "log" and size.get_xlabel() == "parameters"
    size.figure.canvas.draw()
    labels = [t.get_text() for t in size.xaxis.get_ticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"\d+(\.\d+)?[kMG]?", t) for t in labels), labels  # 2k, 5k: no 10^3 mathtext
    from matplotlib.collections import LineCollection

    segments = [seg for c in curves.collections if isinstance(c, LineCollection) for seg in c.get_segments()]
    assert len(segments) == 12 and all(len(seg) == 2 for seg in segments)  # one curve per trial, of its 2 epochs
    bars = {t.get_text(): p.get_width() for t, p in zip(importance.get_yticklabels(), importance.patches)}
    assert max(bars, key=bars.get) == "lr"  # the parameter that matters is the longest bar


def test_plot_evaluation_draws_finalists_and_named_models_with_error_bars(tmp_path, monkeypatch):
    from rknas.report import plot_evaluation

    figures = captured_figures(monkeypatch)
    models = [{"name": "trial_3", "source": "trial", "params": 1000, "mean": 0.9, "std": 0.01},
              {"name": "trial_5", "source": "trial", "params": 3000, "mean": 0.92, "std": 0.02},
              {"name": "rkcnn_e", "source": "model", "params": 2000, "mean": 0.91, "std": 0.0}]
    plot_evaluation(models, tmp_path / "e.png", title="t")
    (fig,) = figures
    ((title, xlabel, ylabel, ax),) = fig["axes"]
    assert (title, xlabel, ax.get_xscale()) == ("t", "parameters", "log") and "test accuracy" in ylabel
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["finalist (trial)", "named model"]
    series = {c.get_label(): c for c in ax.containers}
    trial_line = series["finalist (trial)"].lines[0]
    assert list(trial_line.get_xdata()) == [1000, 3000] and list(trial_line.get_ydata()) == [0.9, 0.92]
    assert trial_line.get_marker() == "o" and series["named model"].lines[0].get_marker() == "s"
    assert sorted(t.get_text() for t in ax.texts) == ["rkcnn_e", "trial_3", "trial_5"]


def test_report_into_an_existing_folder_writes_study_png_inside_it(cli, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = synthetic_study()
    optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage, to_storage=url, to_study_name="syn")
    out = tmp_path / "runs"
    out.mkdir()
    code, stdout, err = cli("report", "--study", "syn", "--storage", url, "-o", out)
    assert code == 0, err
    assert (out / "syn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "runs.png").exists() and f"Wrote {out / 'syn.png'}" in stdout


def test_the_evaluation_plots_params_axis_labels_do_not_overlap(tmp_path, monkeypatch):
    """Sizes inside one decade made matplotlib label its minor ticks, which overlapped (issue 27)."""
    from rknas import report

    seen = {}
    real = report._save

    def measure(fig, path):  # the labels as drawn, on the figure's own canvas, before it is saved and closed
        fig.tight_layout()
        fig.canvas.draw()
        (ax,) = fig.axes
        lo, hi = ax.get_xlim()
        shown = [t for t in ax.xaxis.get_ticklabels(which="both") if t.get_text() and lo <= t.get_position()[0] <= hi]
        seen["labels"] = [t.get_text() for t in shown]
        seen["boxes"] = sorted((t.get_window_extent() for t in shown), key=lambda b: b.x0)
        return real(fig, path)

    monkeypatch.setattr(report, "_save", measure)
    models = [{"name": f"m{i}", "source": "trial", "params": p, "mean": 0.9, "std": 0.01}
              for i, p in enumerate((11_000, 14_500, 21_000, 27_800, 31_010, 38_000))]
    report.plot_evaluation(models, tmp_path / "e.png")
    assert len(seen["labels"]) >= 2 and all(re.fullmatch(r"\d+(\.\d+)?[kMG]?", t) for t in seen["labels"]), seen
    boxes = seen["boxes"]
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), seen["labels"]
    seen.clear()
    models = [{**m, "params": p} for m, p in zip(models, (3_000, 9_000, 30_000, 120_000, 700_000, 2_500_000))]
    report.plot_evaluation(models, tmp_path / "wide.png")
    assert seen["labels"] == ["5k", "10k", "20k", "50k", "100k", "200k", "500k", "1M", "2M"]
    boxes = seen["boxes"]
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), seen["labels"]


def _importance_study(n):
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("metrics", ["val_accuracy"])
    dists = {"k": IntDistribution(8, 64), "rule": CategoricalDistribution(["E", "I", "R"])}
    for i in range(n):
        k, rule = 8 + i % 57, "EIR"[i % 3]
        study.add_trial(optuna.trial.create_trial(params={"k": k, "rule": rule}, distributions=dists,
                                                  value=k / 64 + (0.05 if rule == "R" else 0.0)))
    return study


def test_importances_computed_beside_the_plot_equal_those_computed_inline(monkeypatch):
    import multiprocessing

    from rknas import importance

    study = _importance_study(60)
    complete = study.get_trials()
    worker = importance.ImportanceWorker(context=multiprocessing.get_context("spawn"))
    assert worker.importances(study, complete).result(timeout=120) == importance.parameter_importances(study, complete)
    assert not worker._proc.is_alive()  # it answered once and exited
    assert set(importance.parameter_importances(study, complete)) == {"k", "rule"}
    monkeypatch.setattr(importance, "_can_fork", lambda: False)
    assert importance.ImportanceWorker.start() is None


def test_a_worker_with_nothing_to_compute_is_stopped_not_waited_for():
    """One completed trial: no importances, and the report does not wait for scikit-learn's import."""
    import multiprocessing

    from rknas import importance

    study = _importance_study(1)
    worker = importance.ImportanceWorker(context=multiprocessing.get_context("spawn"))
    assert worker.importances(study, study.get_trials()) is None
    assert not worker._proc.is_alive() and worker._proc.exitcode is not None


def test_a_worker_that_died_leaves_the_importances_to_the_plotting_process():
    import multiprocessing

    from rknas import importance, report

    study = _importance_study(30)
    complete = study.get_trials()
    worker = importance.ImportanceWorker(context=multiprocessing.get_context("spawn"))
    handed = worker.importances(study, complete)
    worker._proc.kill()  # out of memory, say, while scikit-learn still loads (seconds in a spawned process)
    assert handed is worker
    assert report._importances_from(handed, study, complete) == importance.parameter_importances(study, complete)
    gone = importance.ImportanceWorker(context=multiprocessing.get_context("spawn"))
    gone._proc.kill()
    gone._proc.join()
    assert gone.importances(study, complete) is None  # nothing handed to a dead worker


def test_the_study_picture_gets_its_importances_from_a_worker_started_before_the_study_opened(tmp_path, monkeypatch):
    import multiprocessing

    from rknas import importance, report

    figures = captured_figures(monkeypatch)
    worker = importance.ImportanceWorker(context=multiprocessing.get_context("fork"))
    study = synthetic_study(storage=f"sqlite:///{tmp_path / 's.db'}")

    def not_here(*a, **k):
        raise AssertionError("computed in the plotting process")

    monkeypatch.setattr(report, "parameter_importances", not_here)
    plot_study(study, tmp_path / "r.png", worker)
    panel = [a for t, *_, a in figures[0]["axes"] if t == "what mattered"][0]
    bars = {t.get_text(): p.get_width() for t, p in zip(panel.get_yticklabels(), panel.patches)}
    assert max(bars, key=bars.get) == "lr" and not worker._proc.is_alive()


def test_a_study_picture_is_drawn_once_when_saved(tmp_path, monkeypatch):
    """tight_layout left a placeholder layout engine, for which savefig drew the whole figure twice."""
    from matplotlib.figure import Figure

    draws = []
    real = Figure.draw

    def counted(self, renderer):
        draws.append(self)
        return real(self, renderer)

    monkeypatch.setattr(Figure, "draw", counted)
    plot_study(synthetic_study(), tmp_path / "r.png")
    assert len(draws) == 1


def test_handing_rows_to_the_worker_does_not_wait_for_its_import(tmp_path, monkeypatch):
    """Rows past a socket's buffers: ``importances()`` returns while the worker still imports
    scikit-learn (it blocked until that import ended, a quarter second of every large report),
    and the worker unpickles them only after that import: unpickling imports the classes it
    meets, and on the receiving thread it raced the import (a spawned worker found Optuna half
    initialized)."""
    import importlib
    import importlib.abc
    import importlib.machinery
    import multiprocessing
    import pickle
    import socket
    import sys
    import threading
    import time

    from rknas import importance

    gate, met = tmp_path / "go", tmp_path / "met"
    (tmp_path / "rknas_probe_dist.py").write_text(
        "import os\nfrom optuna.distributions import FloatDistribution\n"
        f"open({str(met)!r}, 'w').write(str(os.path.exists({str(gate)!r})))  # was the worker's import over?\n"
        "class ProbeFloat(FloatDistribution):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class SlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            return importlib.machinery.ModuleSpec(name, self) if name == "rknas_slow_import" else None

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            while not gate.exists():
                time.sleep(0.02)

    monkeypatch.setattr(sys, "meta_path", [SlowImport(), *sys.meta_path])
    monkeypatch.setattr(importance, "_SLOW_IMPORT", "rknas_slow_import")
    study = _importance_study(2)  # the study's metrics; the trials handed over are these:
    worker = importance.ImportanceWorker(context=multiprocessing.get_context("fork"))  # before the probe's import
    probe = importlib.import_module("rknas_probe_dist")
    met.unlink()  # written by this process's import
    dists = {f"x{j}": probe.ProbeFloat(0.0, 1.0) for j in range(6)}
    complete = [optuna.trial.create_trial(params={n: (i * 7 + j) % 10 / 10 for j, n in enumerate(dists)},
                                          distributions=dists, value=i % 10 / 10) for i in range(8000)]
    end = socket.socket(fileno=worker._conn.fileno())  # the rows must overflow this machine's socket buffers
    buffers = end.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + end.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    end.detach()
    assert len(pickle.dumps([(t.params, t.distributions, t.value) for t in complete])) > 2 * buffers
    handed = []
    sender = threading.Thread(target=lambda: handed.append(worker.importances(study, complete)))
    sender.start()
    sender.join(60)
    try:
        assert handed == [worker] and not gate.exists()  # handed over while the worker waits at its import
        waited = time.monotonic() + 2
        while not met.exists() and time.monotonic() < waited:  # where the rows are unpickled too early
            time.sleep(0.02)
    finally:
        gate.touch()
        sender.join()
    assert set(worker.result(timeout=120)) == set(dists)
    assert met.read_text() == "True"  # the worker met the rows' classes after its import, not during it


def test_the_drawer_draws_the_same_png_in_its_own_process_and_raises_what_drawing_raised(tmp_path):
    """`rknas report` draws in a process forked before matplotlib's import: the bytes written
    there are the ones drawn here, and a failure there is the same exception here."""
    import multiprocessing
    import os
    import threading

    import pytest

    from rknas import report

    picture = report.study_picture(synthetic_study())
    here = report.draw_study(picture, tmp_path / "here.png")
    drawer = report.Drawer(context=multiprocessing.get_context("spawn"))
    try:
        assert report.drawn(drawer, os.getpid) == drawer._proc.pid  # calls run there
        there = report.drawn(drawer, report.draw_study, picture, tmp_path / "there.png")
        assert there == tmp_path / "there.png" and there.read_bytes() == here.read_bytes()
        (tmp_path / "a-file").write_text("")
        with pytest.raises((NotADirectoryError, FileExistsError)):  # its folder cannot be made
            report.drawn(drawer, report.draw_study, picture, tmp_path / "a-file" / "r.png")
        assert drawer._proc.is_alive()  # and it still draws
        with pytest.raises(RuntimeError, match="lock"):  # an answer that cannot cross: said, not a hang
            report.drawn(drawer, threading.Lock)
        assert report.drawn(drawer, report.draw_study, picture, tmp_path / "again.png").read_bytes() == here.read_bytes()
    finally:
        drawer.close()
    assert not drawer._proc.is_alive()


def test_a_dead_drawer_leaves_the_drawing_to_this_process(tmp_path, monkeypatch):
    import multiprocessing
    import sys

    from rknas import report

    figures = captured_figures(monkeypatch)
    drawer = report.Drawer(context=multiprocessing.get_context("fork"))
    drawer._proc.kill()
    drawer._proc.join()
    path = report.plot_study(synthetic_study(), tmp_path / "r.png", drawer=drawer)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(figures) == 1  # drawn here
    monkeypatch.setattr(report, "can_fork", lambda: True)
    assert "matplotlib" in sys.modules and report.Drawer.start() is None  # loaded here already: nothing to gain


def _kept(study):
    return study.user_attrs.get("importances")


def test_a_large_quiet_studys_importances_are_kept_and_reused_until_a_trial_completes(tmp_path, monkeypatch):
    """fANOVA (scikit-learn's import, a second and a half) is most of a large study's report: kept
    with the study, it is computed once per set of completed trials, not once per report."""
    from rknas import importance, report

    monkeypatch.setattr(importance, "KEPT_FROM", 12)
    study = synthetic_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    figures = captured_figures(monkeypatch)
    plot_study(study, tmp_path / "1.png")
    kept = _kept(study)
    assert kept["complete"] == 12 and kept["method"] == importance.METHOD
    assert kept["values"] == parameter_importances(study) and list(kept["values"])[0] == "lr"

    computed = []
    monkeypatch.setattr(report, "parameter_importances", lambda *a: computed.append(1) or {"p1_k": 1.0})
    monkeypatch.setattr(importance, "_can_fork", lambda: False)  # computed here, where the test sees it
    plot_study(study, tmp_path / "2.png")
    assert computed == []  # reused
    panel = [a for t, *_, a in figures[1]["axes"] if t == "what mattered"][0]
    assert [t.get_text() for t in panel.get_yticklabels()][::-1] == list(kept["values"])
    assert (tmp_path / "1.png").read_bytes() == (tmp_path / "2.png").read_bytes()

    t = study.ask()  # a trial running: nothing is kept while it runs (its end will change them)
    t.suggest_float("lr", 0.01, 1.0, log=True)
    t.suggest_int("p1_k", 8, 32)
    plot_study(study, tmp_path / "3.png")
    assert computed == [] and _kept(study) == kept  # still 12 completed: reused
    for key, value in TrialRecord(val_accuracy_per_epoch=[0.5, 0.6], params=1000).user_attrs().items():
        t.set_user_attr(key, value)
    study.tell(t, 0.6)
    plot_study(study, tmp_path / "4.png")
    assert computed == [1] and _kept(study)["complete"] == 13 and _kept(study)["values"] == {"p1_k": 1.0}


def test_importances_are_not_kept_for_small_or_busy_studies_or_where_the_storage_refuses(tmp_path, monkeypatch):
    import sqlalchemy

    from rknas import importance

    study = synthetic_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    plot_study(study, tmp_path / "small.png")
    assert _kept(study) is None  # 12 < KEPT_FROM: computed within the report's time, nothing written
    monkeypatch.setattr(importance, "KEPT_FROM", 12)
    study.ask()
    plot_study(study, tmp_path / "busy.png")
    assert _kept(study) is None  # a trial running

    quiet = synthetic_study(storage=f"sqlite:///{tmp_path / 'q.db'}")

    def refuse(self, key, value):
        raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("attempt to write a readonly database"))

    monkeypatch.setattr(optuna.Study, "set_user_attr", refuse)
    assert plot_study(quiet, tmp_path / "ro.png").read_bytes()[:4] == b"\x89PNG"  # the picture all the same
    monkeypatch.undo()
    assert _kept(quiet) is None


def test_kept_importances_are_used_only_for_the_completed_trials_and_method_they_came_from():
    from rknas.importance import METHOD, kept_importances

    values = {"lr": 0.75, "p1_k": 0.25}
    good = {"complete": 12, "method": METHOD, "values": values, "at": "2026-12-06T00:00:00+00:00"}
    table = [
        (good, 12, values),
        (good, 13, None),  # a trial completed since
        (good, 11, None),
        ({**good, "method": "fanova(seed=1)"}, 12, None),  # computed otherwise
        ({**good, "values": None}, 12, None),
        ({"complete": 12}, 12, None),
        (None, 12, None),
        ("junk", 12, None),  # a user attribute of that name that rknas did not write
        ([good], 12, None),
        ({**good, "values": {"lr": "high"}}, 12, None),
        ({**good, "values": {"lr": None}}, 12, None),
    ]
    for kept, complete, expected in table:
        assert kept_importances(StudyRecord(importances=kept), complete) == expected, (kept, complete)
    assert list(kept_importances(StudyRecord(importances=good), 12)) == ["lr", "p1_k"]  # largest first, as kept


def test_ctrl_c_is_the_commands_not_its_workers(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group: a worker that took it printed a
    traceback under the command's one line; the command stops its workers itself."""
    import multiprocessing
    import os
    import signal

    from rknas import report

    drawer = report.Drawer(context=multiprocessing.get_context("fork"))
    try:
        pid = report.drawn(drawer, os.getpid)
        os.kill(pid, signal.SIGINT)
        assert report.drawn(drawer, os.getpid) == pid  # still there, still answering
    finally:
        drawer.close()
