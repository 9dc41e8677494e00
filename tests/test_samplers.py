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


def _search(sampler, n, running=0):
    """n trials of a small 2-parameter problem, then ``running`` trials left unfinished: the proposals."""
    study = optuna.create_study(direction="maximize", sampler=sampler)
    proposals = []
    for i in range(n + running):
        t = study.ask()
        x, k = t.suggest_float("x", -3, 3), t.suggest_categorical("k", ["a", "b", "c"])
        proposals.append((x, k))
        if i < n:
            study.tell(t, -(x - 1) ** 2 + (k == "b"))
    return study, proposals


def test_a_window_at_least_the_study_samples_exactly_as_without_one():
    from rknas.search.samplers import windowed

    _, plain = _search(optuna.samplers.TPESampler(n_startup_trials=5, seed=3), 40)
    _, wide = _search(windowed(optuna.samplers.TPESampler(n_startup_trials=5, seed=3), 40), 40)
    _, narrow = _search(windowed(optuna.samplers.TPESampler(n_startup_trials=5, seed=3), 10), 40)
    assert wide == plain
    assert narrow[:11] == plain[:11] and narrow[11] != plain[11]  # the same until more than 10 trials finished


def test_the_sampler_sees_the_latest_finished_trials_and_every_running_one():
    import pickle

    from rknas.search.samplers import windowed

    seen = []

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, dist):
            seen.append([(t.number, t.state.name) for t in study._get_trials(deepcopy=False, use_cache=False)])
            return super().sample_independent(study, trial, name, dist)

    sampler = windowed(Spy(seed=0), 10)
    study, _ = _search(sampler, 25, running=2)
    last = seen[-1]  # what the last proposal saw: trials 15-24 finished, 25 running (26 is the one being sampled)
    assert [n for n, s in last if s == "COMPLETE"] == list(range(15, 25))
    assert [n for n, s in last if s == "RUNNING"] == [25, 26]
    assert len(study.trials) == 27
    copy = pickle.loads(pickle.dumps(windowed(optuna.samplers.TPESampler(seed=0), 10)))  # Ray ships samplers pickled
    assert copy.window == 10 and isinstance(copy.inner, optuna.samplers.TPESampler)


def test_a_space_sets_the_window_and_a_small_one_is_refused():
    from rknas.search.samplers import WindowedSampler

    sampler = _sampler(parse_space({**SPACE, "sampler": "tpe", "sampler_window": 500}, "t"), 0)
    assert isinstance(sampler, WindowedSampler) and sampler.window == 500
    assert isinstance(sampler.inner, optuna.samplers.TPESampler)
    assert not isinstance(_sampler(parse_space({**SPACE, "sampler": "tpe"}, "t"), 0), WindowedSampler)
    with pytest.raises(ConfigError, match="sampler_window"):
        parse_space({**SPACE, "sampler_window": 5}, "t")
