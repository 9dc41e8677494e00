"""Samplers as plugins: the built-in ones, registered through the hook a plugin uses.

A search (``rknas search``) and a replay (``rknas bench replay``) build their Optuna sampler
from this one registry, so a strategy measured on a benchmark table is exactly the one a search
runs. A plugin adds a sampler with the ``register_samplers`` hook (see ``docs/plugins.md``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Optional

from rknas.hookspecs import hookimpl
from rknas.plugins import Registered
from rknas.registry import Refused, by_name, cached, collect

AUTO = "auto"  # a space's default: the sampler the evidence favours (benchmarks/RESULTS.md)


@dataclasses.dataclass(frozen=True)
class SamplerSpec(Registered):
    """A named way to build an Optuna sampler.

    Attributes:
        name: The name spaces and ``--strategy`` use (``tpe``).
        make: ``make(seed, objectives)`` returns a fresh ``optuna.samplers.BaseSampler``;
            ``objectives`` is the study's number of objectives.
        description: One line for ``rknas bench replay --help`` and ``rknas plugins``.
        multi_objective: Whether it handles several objectives (all samplers handle one).
        package: Filled in by the registry: the distribution that registered it.
        version: Filled in by the registry.
    """

    name: str
    make: Callable[[int, int], Any]
    description: str = ""
    multi_objective: bool = True
    package: str = ""
    version: str = ""



def _random(seed: int, objectives: int) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _tpe(seed: int, objectives: int) -> Any:
    import optuna

    # Five random trials, then TPE (multi-objective TPE with two or more objectives).
    return optuna.samplers.TPESampler(n_startup_trials=5, seed=seed)


def _nsga2(seed: int, objectives: int) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(population_size=10, seed=seed)


BUILTIN = (
    SamplerSpec("random", _random, "uniform random search (the baseline every strategy is judged against)"),
    SamplerSpec("tpe", _tpe, "Optuna's TPE after 5 random trials; multi-objective TPE for a Pareto study"),
    SamplerSpec("nsga2", _nsga2, "Optuna's NSGA-II, population 10 (Pareto studies; in short searches no better than random)"),
)


def default_sampler(objectives: int) -> str:
    """The sampler ``sampler: auto`` means.

    Args:
        objectives: The study's number of objectives.

    Returns:
        A registered sampler name.
    """
    del objectives  # TPE for one objective and for a Pareto set: on the Fashion-MNIST table, multi-objective
    # TPE left half the hypervolume regret of NSGA-II (population 10), which did no better than random search
    return "tpe"


def make_sampler(name: str, seed: int, objectives: int, known: Optional[dict[str, SamplerSpec]] = None) -> Any:
    """A fresh sampler by registered name (``auto`` for the default).

    Args:
        name: A registered sampler name, or ``auto``.
        seed: The sampler's seed.
        objectives: The study's number of objectives.
        known: The registry (default: every registered sampler).

    Returns:
        An ``optuna.samplers.BaseSampler``.

    Raises:
        ConfigError: No plugin registers ``name``, or it cannot handle several objectives.
    """
    from rknas.errors import ConfigError

    known = registered_samplers() if known is None else known
    name = default_sampler(objectives) if name == AUTO else name
    if name not in known:
        raise ConfigError(f"unknown sampler {name!r}; known: {', '.join([AUTO, *known])}")
    spec = known[name]
    if objectives > 1 and not spec.multi_objective:
        raise ConfigError(f"sampler {name!r} ({spec.provider}) handles one objective, but the study has {objectives}; "
                          f"choose one of {', '.join(n for n, s in known.items() if s.multi_objective)}")
    return spec.make(seed, objectives)


@hookimpl
def register_samplers(register: Callable[[SamplerSpec], None]) -> None:
    """rknas's own samplers, registered like a plugin's."""
    for spec in BUILTIN:
        register(spec)


def registered_samplers() -> dict[str, SamplerSpec]:
    """Every registered search sampler by name, built-ins first (cached until the plugin set changes).

    Returns:
        Samplers keyed by name, each stamped with the package and version that registered it.

    Raises:
        PluginError: Two plugins register the same name, a name is ``auto`` or holds ``+``, or
            a plugin registers something that is not a ``SamplerSpec``.
    """
    return dict(cached("samplers", _collect_samplers))


def _collect_samplers() -> dict[str, SamplerSpec]:
    specs = collect("register_samplers", SamplerSpec, _validate, shown="rknas.search.samplers.SamplerSpec")
    return by_name(specs, "sampler")


def _validate(provider: str, spec: Any) -> Any:
    if isinstance(spec, SamplerSpec) and (spec.name == AUTO or "+" in spec.name or not spec.name):
        raise Refused(f"registered a sampler named {spec.name!r}: names are not empty, not "
                      f"{AUTO!r} and hold no '+' (it joins a sampler to +asha and +warm)")
    return spec


class _RecentTrials:
    """A study as a sampler sees it through a window: one snapshot of its trials per proposal."""

    def __init__(self, study: Any, trials: list):
        self._study, self._trials = study, trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list:
        trials = self._trials if states is None else [t for t in self._trials if t.state in states]
        if deepcopy:
            import copy

            return copy.deepcopy(trials)
        return trials

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list:
        return self._get_trials(deepcopy, states)

    @property
    def trials(self) -> list:
        return self._get_trials()


def windowed(sampler: Any, window: Optional[int]) -> Any:
    """``sampler`` learning from the latest ``window`` finished trials only (None: from all of them).

    TPE reads every finished trial on each proposal, so its cost grows with the study
    (benchmarks/RESULTS.md, "A study of thousands of trials"); a window bounds it. A study with
    no more finished trials than the window is sampled exactly as without one.

    Args:
        sampler: An Optuna sampler.
        window: How many of the latest finished trials it sees, or None.

    Returns:
        The sampler itself when ``window`` is None, else a sampler wrapping it.
    """
    return sampler if window is None else _windowed_class()(sampler, window)


class _Windowed:
    """What ``WindowedSampler`` does; mixed into Optuna's ``BaseSampler`` on first use (see below),
    so that importing this module imports no Optuna.

    The study's trials are read once per proposal, not once per parameter as TPE reads them
    with its constant liar: one snapshot serves every call made for the same trial.
    """

    def __init__(self, inner: Any, window: int):
        self.inner, self.window = inner, window
        self._snapshot: Optional[tuple[int, int, list]] = None  # (study id, trial number, trials in the window)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_snapshot": None}

    def __getattr__(self, name: str) -> Any:  # anything else Optuna asks of a sampler
        if name in ("inner", "window", "_snapshot"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _view(self, study: Any, trial: Any) -> _RecentTrials:
        key = (id(study), trial.number)
        if self._snapshot is None or self._snapshot[:2] != key:
            trials = study._get_trials(deepcopy=False, states=None, use_cache=False)
            finished = [t for t in trials if t.state.is_finished()]
            if len(finished) > self.window:
                first_kept = finished[-self.window].number
                trials = [t for t in trials if not t.state.is_finished() or t.number >= first_kept]
            self._snapshot = (*key, trials)
        return _RecentTrials(study, self._snapshot[2])

    def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
        return self.inner.infer_relative_search_space(self._view(study, trial), trial)

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
        return self.inner.sample_relative(self._view(study, trial), trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.inner.sample_independent(self._view(study, trial), trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._snapshot = None
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def __getattr__(name: str) -> Any:
    """``WindowedSampler``: an Optuna sampler (Ray Tune's searcher accepts only ``BaseSampler``s)
    that proposes from the latest ``window`` finished trials; built when first asked for, at
    module level, so it pickles like the sampler it wraps."""
    if name == "WindowedSampler":
        return _windowed_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _windowed_class() -> type:
    if "WindowedSampler" not in globals():
        import optuna

        globals()["WindowedSampler"] = type("WindowedSampler", (_Windowed, optuna.samplers.BaseSampler),
                                            {"__module__": __name__, "__doc__": _Windowed.__doc__})
    return globals()["WindowedSampler"]
