"""The sampler registry: built-ins through the hook, a space's `sampler:`, plugin samplers, bad names."""

import optuna
import pytest

from rknas.errors import ConfigError, PluginError
from rknas.hookspecs import hookimpl
from rknas.search.runner import _sampler
from rknas.search.samplers import SamplerSpec, make_sampler
from rknas.search.samplers import registered_samplers as samplers
from rknas.search.space import parse_space

SPACE = {"name": "t", "data": {"name": "digits"}, "architecture": {"periods": 1, "strategy": ["E"], "stages": 1, "k": [8, 16]}}
PARETO = [{"metric": "val_accuracy", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}]


def test_the_builtins_come_through_the_hook_from_rknas():
    known = samplers()
    assert list(known)[:3] == ["random", "tpe", "nsga2"]
    assert {s.package for s in known.values()} == {"rknas"}


@pytest.mark.parametrize("raw,cls", [
    ({}, optuna.samplers.TPESampler),
    ({"objectives": PARETO}, optuna.samplers.TPESampler),
    ({"sampler": "nsga2", "objectives": PARETO}, optuna.samplers.NSGAIISampler),
    ({"sampler": "random"}, optuna.samplers.RandomSampler),
    ({"sampler": "tpe", "objectives": PARETO}, optuna.samplers.TPESampler),
])
def test_a_space_picks_its_sampler(raw, cls):
    assert type(_sampler(parse_space({**SPACE, **raw}, "t"), seed=0)) is cls


def test_an_unknown_sampler_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"sampler: unknown sampler 'cmaes'; known: auto, random, tpe, nsga2"):
        parse_space({**SPACE, "sampler": "cmaes"}, "t")


def test_a_plugin_sampler_is_usable_in_a_space_and_refused_where_it_cannot_work(register_plugin):
    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register(SamplerSpec("one", lambda seed, n: optuna.samplers.RandomSampler(seed=seed), multi_objective=False))

    register_plugin(Plugin())
    assert type(_sampler(parse_space({**SPACE, "sampler": "one"}, "t"), seed=0)) is optuna.samplers.RandomSampler
    with pytest.raises(ConfigError, match="handles one objective"):
        parse_space({**SPACE, "sampler": "one", "objectives": PARETO}, "t")
    with pytest.raises(ConfigError, match="handles one objective"):
        make_sampler("one", 0, 2)


@pytest.mark.parametrize("name", ["tpe", "auto", "a+b", ""])
def test_bad_or_duplicate_names_are_a_plugin_error(register_plugin, name):
    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register(SamplerSpec(name, lambda seed, n: None))

    register_plugin(Plugin())
    with pytest.raises(PluginError, match="registered twice" if name == "tpe" else "names are not empty"):
        samplers()
