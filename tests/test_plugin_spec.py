"""Plugin blocks get a spec: BlockSpec builders, old positional builders, cached look-ups,
provenance from distributions, named models through a hook, and rknas.testing."""

import dataclasses
import inspect
import warnings
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import torch
from torch import nn

import rknas
import rknas.testing
from rknas import BlockSpec, PluginError, StageStrategy, build_network
from rknas.models.named import models
from rknas.plugins import get_plugin_manager, provider_of
from rknas.strategies.base import is_positional_builder
from rknas.strategies.lookup import list_strategies, strategies
from rknas.testing import check_strategy, registered_plugins, temporary_plugin

REPO = Path(__file__).resolve().parents[1]


class Recorder:
    """A plugin whose builder records every spec it is given (and counts hook calls)."""

    def __init__(self, name="rec"):
        self.name, self.specs, self.calls = name, [], 0

    @rknas.hookimpl
    def register_stage_strategies(self, register):
        self.calls += 1
        register(StageStrategy(name=self.name, description="records specs", builder=self.build))

    def build(self, spec: BlockSpec) -> nn.Module:
        self.specs.append(spec)
        return nn.Identity()


# ---- BlockSpec ------------------------------------------------------------------------------


def test_network_tells_each_builder_where_its_block_sits(register_plugin):
    rec = register_plugin(Recorder(), name="recpkg")
    build_network({"framework": "mnist", "strategy": ["rec", "I"], "stages": [3, 2], "k": [4, 6], "steps": [2, 1],
                   "width": 0.5, "dropout": 0.1})
    assert rec.specs == [
        BlockSpec(channels=4, stages=3, width=0.5, dropout=0.1, framework="mnist", norm="group",
                  period=0, periods=2, step=step, steps=2, size=6)
        for step in (0, 1)
    ]
    rec.specs.clear()
    build_network({"strategy": ["I", "rec"], "stages": [2, 1], "k": [4, 8], "image_size": 16})
    (spec,) = rec.specs
    assert (spec.framework, spec.norm, spec.period, spec.periods, spec.size, spec.channels) == ("cifar", "batch", 1, 2, 8, 8)


def test_block_spec_is_frozen_keyword_only_and_makes_its_norm():
    spec = BlockSpec(channels=8, stages=2)
    assert (spec.width, spec.dropout, spec.framework, spec.norm, spec.period, spec.step) == (1.0, 0.0, "cifar", "batch", 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.channels = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        BlockSpec(8, 2)  # type: ignore[misc]  # fields added later cannot shift positions
    bn = spec.norm_layer(8)
    assert isinstance(bn, nn.BatchNorm2d) and bn.eps == 1e-3 and bn.momentum == 0.01
    gn = dataclasses.replace(spec, norm="group").norm_layer(64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        dataclasses.replace(spec, norm="layer").norm_layer(8)
    with pytest.raises(ValueError, match="channels >= 1"):
        BlockSpec(channels=0, stages=1)


def _new(spec): ...
def _new_annotated(s: BlockSpec, extra=None, more=None, most=None): ...
def _new_named(spec, a=1, b=2, c=3): ...
def _old(channels, stages, width, dropout): ...
def _old_defaults(channels, stages, width=1.0, dropout=0.0): ...
def _old_loose(k, s=2, w=1.0, d=0.0): ...
def _old_star(*args): ...


class _OldClass(nn.Module):
    def __init__(self, channels, stages, width=1.0, dropout=0.0):
        super().__init__()


class _NewClass(nn.Module):
    def __init__(self, spec):
        super().__init__()


@pytest.mark.parametrize("builder,positional", [
    (_new, False), (_new_annotated, False), (_new_named, False), (_NewClass, False), (lambda spec: None, False),
    (_old, True), (_old_defaults, True), (_old_loose, True), (_old_star, True), (_OldClass, True),
    (lambda k, s, w, d: None, True), (print, True), (max, False),  # print(*args); max: no signature
])
def test_old_builders_are_told_apart_by_signature(builder, positional):
    assert is_positional_builder(builder) is positional


# ---- old-style builders ---------------------------------------------------------------------


def test_a_plugin_from_the_old_guide_works_unchanged_with_a_deprecation_warning():
    import rknas_legacy_heun.plugin as legacy  # tests/support: a verbatim copy of the old template

    assert legacy.HEUN.positional_builder
    with temporary_plugin(legacy, name="rknas-legacy-heun"):
        with pytest.warns(DeprecationWarning, match=r"'heun' from .*builder\(channels, stages, width, dropout\) is deprecated"
                          ) as record:
            list_strategies()
        (w,) = [w for w in record if issubclass(w.category, DeprecationWarning)]
        assert w.filename == legacy.__file__  # points at the plugin's register(...) line
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # cached: no second warning, and building does not warn
            list_strategies()
            model = build_network({"strategy": ["heun", "I"], "stages": [3, 2], "k": [4, 6], "image_size": 8,
                                   "width": 0.5, "dropout": 0.1})
        block = model.periods[0].blocks[0]
        assert isinstance(block, legacy.HeunBlock) and len(block.correctors) == 2
        assert block.predictor.conv1.out_channels == 2  # width 0.5 of k=4 reached the old builder
        assert isinstance(check_strategy("heun", framework="mnist", norm="group"), legacy.HeunBlock)
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    assert "heun" not in {s.name for s in list_strategies()}


def test_old_builders_also_work_without_registration():
    st = StageStrategy(name="old", description="x", builder=lambda k, s, w, d: nn.Conv2d(k, k, 1))
    assert st.build(BlockSpec(channels=3, stages=1)).in_channels == 3
    assert rknas.models.network.build_stage(st, 5, 1, 1.0, 0.0).out_channels == 5  # the older call form too


# ---- caching --------------------------------------------------------------------------------


def test_strategy_lookups_are_cached_until_the_plugin_set_changes(register_plugin):
    rec = register_plugin(Recorder(), name="recpkg")
    for _ in range(3):
        rknas.get_strategy("rec")
        list_strategies()
    assert rec.calls == 1
    build_network({"strategy": "rec", "stages": 1, "k": 4, "image_size": 8})
    assert rec.calls == 1
    other = register_plugin(Recorder("rec2"), name="recpkg2")
    assert {"rec", "rec2"} <= {s.name for s in list_strategies()}
    assert rec.calls == 2 and other.calls == 1
    get_plugin_manager().unregister(other)  # directly on the manager, not through a helper
    assert "rec2" not in {s.name for s in list_strategies()}
    assert rec.calls == 3


def test_the_cached_result_cannot_be_changed_by_a_caller():
    strategies().pop("I")
    assert "I" in strategies()


def test_a_new_manager_starts_a_new_cache(monkeypatch):
    from rknas import plugins

    before = get_plugin_manager()
    list_strategies()
    plugins.reset()
    try:
        assert get_plugin_manager() is not before
        assert get_plugin_manager().generation > before.generation
        assert {"E", "I", "R"} <= {s.name for s in list_strategies()}
    finally:
        plugins.reset()


# ---- provenance -----------------------------------------------------------------------------


def _installed(name):
    try:
        return distribution(name)
    except PackageNotFoundError:
        pytest.skip(f"{name} is not installed (pip install -e plugins/{name})")


@pytest.mark.parametrize("path", ["plugins/rknas-template/src/rknas_heun/plugin.py",
                                  "plugins/rknas-baselines/src/rknas_baselines/plugin.py"])
def test_plugins_do_not_import_their_version_for_provenance(path):
    assert "__version__" not in (REPO / path).read_text()


def test_entry_point_plugins_are_attributed_through_pluggys_distinfo(monkeypatch):
    from rknas import plugins

    dist = _installed("rknas-template")
    monkeypatch.setenv("RKNAS_PLUGINS", "rknas-template")
    plugins.reset()
    try:
        pm = get_plugin_manager()
        (heun_plugin,) = [p for p, d in pm.list_plugin_distinfo() if d.project_name == "rknas-template"]
        assert provider_of(heun_plugin) == ("rknas-template", dist.version)
        st = rknas.get_strategy("heun")
        assert (st.package, st.version) == ("rknas-template", dist.version)
        assert rknas.get_strategy("I").provider == f"rknas {rknas.__version__}"
    finally:
        monkeypatch.undo()
        plugins.reset()


def test_a_module_registered_directly_is_attributed_to_its_distribution():
    dist = _installed("rknas-template")
    import rknas_heun.plugin as heun

    with temporary_plugin(heun, name="any-name-at-all"):
        st = rknas.get_strategy("heun")
        assert (st.package, st.version) == ("rknas-template", dist.version)


def test_objects_outside_any_distribution_keep_their_name_and_version(register_plugin):
    class P(Recorder):
        __version__ = "3.2.1"

    register_plugin(P(), name="handmade")
    assert rknas.get_strategy("rec").provider == "handmade 3.2.1"


# ---- named models ---------------------------------------------------------------------------


def test_paper_models_come_from_a_builtin_plugin():
    impls = get_plugin_manager().hook.register_models.get_hookimpls()
    assert [i.plugin_name for i in impls] == ["rknas.models.paper"]
    found = models()
    assert "rkcnn_i_5_5_6_k150_120_120" in found and "rkcnn_e_2_mnist_k24" in found
    assert len(found) == 24 and {m.provider for m in found.values()} == {f"rknas {rknas.__version__}"}
    assert rknas.list_models("rkcnn_r_3_4_4*") == ["rkcnn_r_3_4_4_k180"]


def test_plugins_register_named_models(register_plugin):
    class P:
        @rknas.hookimpl
        def register_models(self, register):
            register({"strategy": "I", "stages": 2, "k": 8, "image_size": 8}, name="tiny_i")
            register({"strategy": ["E", "R"], "stages": [1, 2], "k": [4, 6], "image_size": 8})

    register_plugin(P(), name="modelpkg")
    assert rknas.list_models("tiny_i") == ["tiny_i"]
    assert models()["rkcnn_e_r_1_2_k4_6"].package == "modelpkg"
    model = rknas.create_model("tiny_i", classes=3)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 3)


def test_names_tell_apart_the_order_of_strategies_and_the_time_steps(register_plugin):
    class P:
        @rknas.hookimpl
        def register_models(self, register):
            for strategy, steps in ((["I", "R", "I"], 1), (["I", "I", "R"], 1), (["I", "I", "R"], [1, 1, 2])):
                register({"strategy": strategy, "stages": 2, "k": 8, "steps": steps, "image_size": 8})

    register_plugin(P(), name="orderpkg")  # on main, the first two had one name and were refused as duplicates
    assert [n for n, m in models().items() if m.package == "orderpkg"] == [
        "rkcnn_i_r_i_2_2_2_k8", "rkcnn_i_i_r_2_2_2_k8", "rkcnn_i_i_r_2_2_2_k8_r1_1_2"]


def test_duplicate_and_invalid_models_name_the_package(register_plugin):
    class Dup:
        @rknas.hookimpl
        def register_models(self, register):
            register({"strategy": "I", "stages": [5, 5, 6], "k": [150, 120, 120]})

    with registered_plugins() as register:
        register(Dup(), name="duppkg")
        with pytest.raises(PluginError, match="'rkcnn_i_5_5_6_k150_120_120' is registered twice: by rknas .* and by duppkg"):
            rknas.list_models()

    class Bad:
        @rknas.hookimpl
        def register_models(self, register):
            register({"strategy": "I", "stages": 0})

    register_plugin(Bad(), name="badmodels")
    with pytest.raises(PluginError, match="badmodels .*invalid model config: .*stages"):
        rknas.list_models()


# ---- rknas.testing --------------------------------------------------------------------------


def test_check_strategy_is_the_networks_check(register_plugin):
    block = check_strategy("I", channels=6)
    assert isinstance(block, rknas.RKBlock) and block.stages == 2  # default: max(min_stages, 2)
    assert isinstance(check_strategy(rknas.get_strategy("E"), BlockSpec(channels=4, stages=1)), rknas.RKBlock)
    register_plugin(Recorder("shrinks"), name="shrinkpkg")
    bad = StageStrategy(name="shrinks", description="x", builder=lambda spec: nn.Conv2d(spec.channels, 1, 1),
                        package="shrinkpkg", version="1")
    with pytest.raises(PluginError, match="'shrinks' from shrinkpkg 1 returned shape"):
        check_strategy(bad)
    with pytest.raises(rknas.ConfigError, match="needs stages >= 2"):
        check_strategy("R", stages=1)


def test_temporary_plugin_leaves_an_already_registered_plugin_alone(register_plugin):
    rec = register_plugin(Recorder(), name="recpkg")
    with temporary_plugin(rec) as same:
        assert same is rec
    assert get_plugin_manager().is_registered(rec)
    fresh = Recorder("fresh")
    with temporary_plugin(fresh, name="freshpkg"):
        assert rknas.get_strategy("fresh").package == "freshpkg"
    assert not get_plugin_manager().is_registered(fresh)


def test_the_test_support_helpers_are_the_public_ones():
    import plugin_testing

    assert plugin_testing.registered_plugins is registered_plugins


@pytest.mark.parametrize("name", rknas.testing.__all__)
def test_rknas_testing_has_google_docstrings(name):
    fn = getattr(rknas.testing, name)
    doc = inspect.getdoc(fn) or ""
    assert "Args:" in doc or not [p for p in inspect.signature(fn).parameters], name
    assert "Returns:" in doc, name


@pytest.mark.slow
def test_importing_rknas_testing_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, rknas.testing, rknas.hookspecs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


class _Shrinks(Recorder):
    """A block that breaks the contract: it returns one channel."""

    def build(self, spec: BlockSpec) -> nn.Module:
        return nn.Conv2d(spec.channels, 1, 1)


class _ReadsValues(Recorder):
    """A block that honours the contract but reads a value in forward, which the meta device cannot."""

    def build(self, spec: BlockSpec) -> nn.Module:
        class Block(nn.Module):
            def forward(self, x):
                return x * 2 if float(x.abs().sum()) >= 0 else x

        return Block()


def test_counting_without_running_blocks_still_names_a_broken_plugin_and_counts_one_that_reads_values(register_plugin):
    from rknas.models.counting import count_network, describe

    register_plugin(_Shrinks("shrinks"), name="shrinkpkg")
    with pytest.raises(PluginError, match="'shrinks' from shrinkpkg.* returned shape"):
        describe({"framework": "mnist", "strategy": "shrinks", "stages": 2, "k": 4})
    register_plugin(_ReadsValues("reads"), name="readspkg")
    config = rknas.NetworkConfig(framework="mnist", strategy=["reads", "I"], stages=2, k=4)
    model = build_network(config)
    assert count_network(config) == (rknas.count_params(model), rknas.count_flops(model)) and model.periods


class _BuildReadsValues(Recorder):
    """A block whose builder reads a weight's value (as orthogonal parametrizations do): no meta build."""

    def build(self, spec: BlockSpec) -> nn.Module:
        conv = nn.Conv2d(spec.channels, spec.channels, 1)
        conv.scale = float(conv.weight.abs().sum())  # raises on the meta device
        return conv


class _ForwardNumpy(Recorder):
    """A block that goes through NumPy in forward: on meta that is a TypeError, not a RuntimeError."""

    def build(self, spec: BlockSpec) -> nn.Module:
        class Block(nn.Module):
            def forward(self, x):
                return x * float(x.detach().numpy().std() >= 0)

        return Block()


class _Caches(Recorder):
    """A block that keeps a tensor made from its input's shape and device (a cache) for later calls."""

    def build(self, spec: BlockSpec) -> nn.Module:
        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.cache = {}

            def forward(self, x):
                key = tuple(x.shape[-2:])
                if key not in self.cache:
                    self.cache[key] = torch.ones(key, device=x.device)
                return x * self.cache[key]

        return Block()


@pytest.mark.parametrize("plugin", [_BuildReadsValues, _ForwardNumpy])
def test_a_block_the_meta_device_cannot_build_or_run_is_counted_for_real(register_plugin, plugin):
    from rknas.models.counting import count_network

    register_plugin(plugin("odd"), name="oddpkg")
    config = rknas.NetworkConfig(framework="mnist", strategy=["odd", "E"], stages=2, k=4)
    model = build_network(config)
    assert count_network(config) == (rknas.count_params(model), rknas.count_flops(model))
    assert rknas.count_flops(model) > 0


def test_counting_a_live_model_leaves_no_meta_tensor_in_it(register_plugin):
    register_plugin(_Caches("caches"), name="cachepkg")
    model = build_network(rknas.NetworkConfig(framework="mnist", strategy=["caches", "E"], stages=2, k=4))
    flops = rknas.count_flops(model)
    x = torch.zeros(2, 1, 28, 28)
    assert model(x).shape == (2, 10)  # the counting pass's cache (made on meta) is not the model's
    assert rknas.count_flops(model) == flops
