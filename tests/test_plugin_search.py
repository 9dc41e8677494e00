"""Installed plugin packages seen the way users see them: entry points, CLI, and a search."""

import json

import optuna
import pytest
import torch
from optuna.trial import TrialState

from rknas import plugins
from rknas.search.runner import SearchOptions, run_search
from rknas.strategies.lookup import list_strategies


@pytest.fixture
def installed_plugins(monkeypatch):
    """Load the entry-point plugins of plugins/ (installed by `make`), then restore."""
    monkeypatch.setenv("RKNAS_PLUGINS", "rknas-baselines,rknas-template")
    plugins.reset()
    yield
    monkeypatch.undo()
    plugins.reset()




def test_entry_point_plugins_are_listed_with_package_and_version(installed_plugins, cli):
    code, out, _ = cli("strategies", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["heun"]["package"] == "rknas-template" and rows["heun"]["version"] == "0.1.0"
    assert rows["densenet"]["package"] == "rknas-baselines"
    code, out, _ = cli("plugins", "--json")
    info = {r["name"]: r for r in json.loads(out)["plugins"]}
    assert "register_search_spaces" in info["baselines"]["hooks"]
    code, out, _ = cli("describe", "--framework", "mnist", "--strategy", "preact", "--stages", "1", "--k", "32", "--json")
    assert code == 0 and json.loads(out)["params"] == 52_234  # paper: 52.23K


def test_restricting_plugins_hides_them(monkeypatch, cli):
    monkeypatch.setenv("RKNAS_PLUGINS", "rknas-template")
    plugins.reset()
    try:
        names = {s.name for s in list_strategies()}
        assert "heun" in names and "densenet" not in names
    finally:
        monkeypatch.undo()
        plugins.reset()


def test_broken_plugin_from_describe_is_one_line_exit_2(cli):
    code, _, err = cli("describe", "--strategy", "search_broken", "--stages", "1", "--k", "8")
    assert code == 2 and "'search_broken' from rknas_testplugins 0.0.1" in err and "returned shape" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_search_mixing_rk_and_baseline_strategies(installed_plugins, ray_local, tmp_path):
    url = f"sqlite:///{tmp_path}/b.db"
    study = optuna.create_study(study_name="digits_baselines", storage=url, direction="maximize")
    for a, b in (("I", "densenet"), ("cliquenet", "preact"), ("rknn", "R"), ("E", "preact_bottleneck")):
        study.enqueue_trial({"p1_strategy": a, "p1_stages": 2, "p1_k": 8, "p2_strategy": b, "p2_stages": 2, "p2_k": 8})
    res = run_search(SearchOptions(space="digits_baselines", trials=4, storage=url, epochs=2, concurrency=2,
                                   early_stopping=False))
    trials = optuna.load_study(study_name="digits_baselines", storage=url).trials
    assert res.finished == 4
    by_arch = {tuple(t.user_attrs["network"]["strategy"]): t for t in trials}
    for arch in by_arch:
        t = by_arch[arch]
        assert t.state == TrialState.COMPLETE, t.user_attrs.get("fail_reason")
        assert t.user_attrs["strategy_versions"][arch[0]].split()[0] in ("rknas", "rknas-baselines")
    assert by_arch[("I", "densenet")].user_attrs["strategy_versions"]["densenet"] == "rknas-baselines 0.1.0"


@pytest.mark.parametrize(
    "builder,fragment",
    [("raise", "failed to build"), ("dup", "registered twice: by rknas"), ("forward", "raised in forward")],
)
def test_broken_plugins_from_describe(cli, register_plugin, builder, fragment):
    import rknas
    from rknas import StageStrategy

    class Boom(torch.nn.Module):
        def forward(self, y):
            raise RuntimeError("boom")

    def build(spec):
        if builder == "raise":
            raise ValueError("bad k")
        return Boom()

    class P:
        @rknas.hookimpl
        def register_stage_strategies(self, register):
            register(StageStrategy(name="I" if builder == "dup" else "bad", description="x", builder=build))

    register_plugin(P(), name="badpkg")
    code, _, err = cli("describe", "--strategy", "bad", "--stages", "1", "--k", "8")
    assert code == 2 and fragment in err and "badpkg" in err and len(err.strip().splitlines()) == 1
