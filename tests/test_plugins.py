"""The plugin system: built-ins through the hook, throwaway plugins, contract checks."""

import inspect
import json
import os

import pytest
import torch
from torch import nn

import rknas
from rknas import PluginError, PreActUnit, StageStrategy, build_network, hookspecs
from rknas.plugins import get_plugin_manager, plugin_info
from rknas.strategies.lookup import list_strategies


class Heun(nn.Module):
    """y + (u1(y) + u2(concat(y, u1(y)))) / 2, built from the public unit."""

    def __init__(self, k, s, w, d):
        super().__init__()
        self.u1 = PreActUnit(k, k, w, d)
        self.u2 = PreActUnit(2 * k, k, w, d)

    def forward(self, y):
        a = self.u1(y)
        return y + 0.5 * (a + self.u2(torch.cat([y, a], 1)))


class ThrowawayPlugin:
    __name__ = "throwaway"
    __version__ = "9.9"

    @rknas.hookimpl
    def register_stage_strategies(self, register):
        register(StageStrategy(name="heun_test", description="Heun test",
                               builder=lambda spec: Heun(spec.channels, spec.stages, spec.width, spec.dropout)))


def test_builtins_register_through_the_hook():
    pm = get_plugin_manager()
    impls = pm.hook.register_stage_strategies.get_hookimpls()
    assert any(i.plugin_name == "rknas.strategies.rk" for i in impls)
    found = {s.name: s for s in list_strategies()}
    assert {"E", "I", "R"} <= set(found)
    assert found["I"].min_stages == 2 and found["E"].min_stages == 1
    assert found["I"].package == "rknas" and found["I"].version == rknas.__version__


def test_every_hookspec_is_documented():
    specs = [f for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "rknas_spec")]
    assert {f.__name__ for f in specs} >= {"register_stage_strategies", "register_models", "register_search_spaces",
                                           "register_datasets"}
    for f in specs:
        assert f.__doc__ and len(f.__doc__.strip()) > 40, f"hook {f.__name__} has no real docstring"
        assert list(inspect.signature(f).parameters) == ["register"]


def test_throwaway_plugin_builds_a_network(register_plugin):
    register_plugin(ThrowawayPlugin(), name="throwaway")
    s = rknas.get_strategy("heun_test")
    assert s.package == "throwaway" and s.version == "9.9"
    model = build_network({"strategy": ["heun_test", "I"], "stages": [1, 2], "k": [4, 4], "image_size": 8})
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    assert any(r["name"] == "throwaway" and "register_stage_strategies" in r["hooks"] for r in plugin_info())


def test_throwaway_plugins_are_gone_after_the_block():
    from plugin_testing import registered_plugins

    with registered_plugins() as register:
        register(ThrowawayPlugin(), name="throwaway")
        assert "heun_test" in {s.name for s in list_strategies()}
    assert "heun_test" not in {s.name for s in list_strategies()}
    assert "throwaway" not in {r["name"] for r in plugin_info()}


@pytest.mark.parametrize(
    "source,hook",
    [
        ("@hookimpl\ndef register_stage_strategy(register):\n    pass\n", "register_stage_strategy"),
        ("@hookimpl\ndef register_stage_strategies(register, extra):\n    pass\n", "extra"),
    ],
    ids=["misspelt-name", "unknown-argument"],
)
def test_a_hook_that_matches_no_spec_is_reported_and_not_loaded(tmp_path, monkeypatch, cli, source, hook):
    from rknas import plugins

    module = f"misspelt_plugin_{hook}"  # a fresh module per case (imports are cached)
    (tmp_path / f"{module}.py").write_text("from rknas import hookimpl\n\n" + source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("RKNAS_PLUGIN_MODULES", f"rknas_testplugins,{module}")
    plugins.reset()
    try:
        code, out, err = cli("plugins", "--json")
        assert code == 0
        info = json.loads(out)
        assert module not in {r["name"] for r in info["plugins"]}
        (message,) = [e for e in info["load_errors"] if module in e]
        assert "was not loaded" in message and hook in message
        assert f"warning: {message}" in err
        assert {"E", "I", "R"} <= {s.name for s in list_strategies()}  # the rest still loads
    finally:
        monkeypatch.undo()
        plugins.reset()


def _plugin(name, builder, **kw):
    class P:
        __name__ = f"pkg_{name}"
        __version__ = "1.2.3"

        @rknas.hookimpl
        def register_stage_strategies(self, register):
            register(StageStrategy(name=name, description="x", builder=builder, **kw))

    return P()


def test_duplicate_name_names_both_providers(register_plugin):
    register_plugin(_plugin("I", lambda spec: nn.Identity()), name="impostor")
    with pytest.raises(PluginError) as err:
        list_strategies()
    assert "'I'" in str(err.value) and "rknas" in str(err.value) and "impostor" in str(err.value)


@pytest.mark.parametrize(
    "builder,fragment",
    [
        (lambda spec: 1 / 0, "failed to build"),
        (lambda spec: "not a module", "not a torch.nn.Module"),
        (lambda spec: nn.Conv2d(spec.channels, spec.channels + 1, 1), "returned shape"),
        (lambda spec: nn.Flatten(), "returned shape"),
        (lambda spec: _Raises(), "raised in forward"),
        (lambda spec: _NoGrad(), "gradient"),
    ],
)
def test_broken_plugins_are_reported_by_name_and_package(register_plugin, builder, fragment):
    register_plugin(_plugin("broken", builder), name="brokenpkg")
    with pytest.raises(PluginError) as err:
        build_network({"strategy": "broken", "stages": 1, "k": 4, "image_size": 8})
    msg = str(err.value)
    assert "'broken'" in msg and "brokenpkg 1.2.3" in msg and fragment in msg


class _Raises(nn.Module):
    def forward(self, y):
        raise RuntimeError("boom")


class _NoGrad(nn.Module):
    def forward(self, y):
        return y.detach() * 0


def test_registering_a_non_strategy_is_reported(register_plugin):
    class Bad:
        @rknas.hookimpl
        def register_stage_strategies(self, register):
            register({"name": "x"})

    register_plugin(Bad(), name="badpkg")
    with pytest.raises(PluginError, match="badpkg.*not a rknas.StageStrategy"):
        list_strategies()


def test_min_stages_enforced():
    with pytest.raises(rknas.ConfigError, match="needs stages >= 2"):
        build_network({"strategy": "R", "stages": 1, "k": 4})


def test_plugins_env_var_restricts_entry_points(monkeypatch):
    from importlib.metadata import EntryPoint

    from rknas import plugins

    ep = EntryPoint(name="rknas_baselines", value="x:y", group="rknas")
    monkeypatch.setenv("RKNAS_PLUGINS", "rknas-template")
    assert not plugins._allowed(ep)
    monkeypatch.setenv("RKNAS_PLUGINS", "rknas-baselines, other")
    assert plugins._allowed(ep)
    monkeypatch.delenv("RKNAS_PLUGINS")
    assert plugins._allowed(ep)


def test_plugins_provide_datasets_and_search_spaces(register_plugin, tmp_path):
    from rknas.config import DataSpec
    from rknas.data import DataSource, TensorData, load_dataset
    from rknas.search.space import load_space, space_files

    def loader(root, n=20):
        x = torch.randint(0, 255, (n, 1, 8, 8), dtype=torch.uint8)
        return TensorData(x, torch.arange(n) % 2, 2), TensorData(x[:4], torch.arange(4) % 2, 2)

    (tmp_path / "rand_space.yaml").write_text("data: {name: rand8}\narchitecture: {periods: 1, stages: 2, k: 8}\n")

    class P:
        @rknas.hookimpl
        def register_datasets(self, register):
            register(DataSource(name="rand8", load=loader))

        @rknas.hookimpl
        def register_search_spaces(self, register):
            register(tmp_path)

    register_plugin(P(), name="randpkg")
    train, test = load_dataset(DataSpec(name="rand8", options={"n": 12}))
    assert len(train) == 12 and train.classes == 2
    assert space_files()["rand_space"][1] == "randpkg"
    assert load_space("rand_space").data.name == "rand8"
    with pytest.raises(rknas.ConfigError, match="unknown data set 'nope'; known: .*rand8"):
        load_dataset(DataSpec(name="nope"))
    with pytest.raises(rknas.ConfigError, match=r"data set 'rand8' \(randpkg\) could not be loaded: TypeError"):
        load_dataset(DataSpec(name="rand8", options={"bogus": 1}))


def test_networks_build_inside_no_grad_and_inference_mode():
    """The contract check runs a backward pass; a caller's grad mode must not break it."""
    with torch.no_grad():
        model = build_network({"strategy": "I", "stages": 2, "k": 4, "image_size": 8})
    with torch.inference_mode():
        build_network({"strategy": "R", "stages": 2, "k": 4, "image_size": 8})
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_importing_the_hook_markers_imports_neither_torch_nor_ray():
    """The first line of every plugin must stay cheap: the package root is lazy (PEP 562)."""
    import subprocess
    import sys

    code = ("import sys; import rknas; from rknas.hookspecs import hookimpl, hookspec; "
            "from rknas import ConfigError, __version__; "
            "print(sorted(m for m in ('torch', 'ray', 'optuna', 'torchvision') if m in sys.modules)); "
            "rknas.build_network; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", out
    assert out[1] == "True"  # and the lazy names still resolve


@pytest.mark.slow
def test_loading_every_installed_plugin_imports_no_torch():
    """Every command that looks up plugins imports their entry points: the shipped ones keep torch out."""
    import subprocess
    import sys

    code = ("import sys; from rknas.plugins import plugin_info; from rknas.data.source import datasets; "
            "from rknas.models.registry import list_models; from rknas.strategies.lookup import list_strategies; "
            "from rknas.search.space import space_files; "
            "datasets(); list_models(); list_strategies(); space_files(); "
            "print(sorted({p['package'] for p in plugin_info()})); print('torch' in sys.modules)")
    from rknas.plugins import MODULES_ENV, PLUGINS_ENV

    env = {k: v for k, v in os.environ.items() if k not in (PLUGINS_ENV, MODULES_ENV)}  # every plugin installed
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    packages, torch_imported = out.stdout.splitlines()
    assert {"rknas", "rknas-baselines", "rknas-template"} <= set(eval(packages)), packages
    assert torch_imported == "False"


def test_the_package_root_lists_and_resolves_its_whole_api():
    for name in rknas.__all__:
        assert getattr(rknas, name) is not None, name
    assert set(rknas.__all__) <= set(dir(rknas))
    assert set(rknas._LAZY) <= set(rknas.__all__)  # every lazy name is public
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rknas.nope  # noqa: B018


def test_the_hook_is_called_as_pluggy_calls_it_tryfirst_trylast_and_wrappers_included(register_plugin):
    """Two throwaway plugins and a wrapper: pluggy's order and wrapping, rknas's attribution."""
    from rknas.strategies.lookup import strategies

    calls = []

    def strategy(name):
        return StageStrategy(name=name, description="test", builder=lambda spec: nn.Identity())

    class First:
        @rknas.hookimpl(tryfirst=True)
        def register_stage_strategies(self, register):
            calls.append("first")
            register(strategy("t_first"))

    class Plain:
        @rknas.hookimpl
        def register_stage_strategies(self, register):
            calls.append("plain")
            register(strategy("t_plain"))

    class Last:
        @rknas.hookimpl(trylast=True)
        def register_stage_strategies(self, register):
            calls.append("last")

    class Wrap:
        @rknas.hookimpl(wrapper=True)
        def register_stage_strategies(self, register):
            calls.append("wrap: before")
            result = yield
            calls.append("wrap: after")
            register(strategy("t_wrapped"))
            return result

    register_plugin(First(), name="firstpkg")
    register_plugin(Plain(), name="plainpkg")  # loaded later: pluggy calls it first, unless tryfirst says otherwise
    register_plugin(Last(), name="lastpkg")  # registered after Plain: pluggy would call it before Plain, but trylast
    register_plugin(Wrap(), name="wrappkg")
    found = strategies()
    assert calls[0] == "wrap: before" and calls[-1] == "wrap: after"  # the wrapper wraps every implementation
    assert calls.index("first") < calls.index("plain") < calls.index("last")  # tryfirst, trylast
    assert {n: found[n].package for n in ("t_first", "t_plain", "t_wrapped")} == {
        "t_first": "firstpkg", "t_plain": "plainpkg", "t_wrapped": "wrappkg"}
    names = list(found)
    assert names[:3] == ["E", "I", "R"] and names[-3:] == ["t_first", "t_plain", "t_wrapped"]  # listed in load order
