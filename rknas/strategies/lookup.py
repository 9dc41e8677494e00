"""The registered stage strategies: collected once through the hook, looked up by name."""

from __future__ import annotations

import warnings

from rknas.errors import ConfigError
from rknas.plugins import load_errors
from rknas.registry import by_name, cached, collect
from rknas.strategies.base import StageStrategy


def strategies() -> dict[str, StageStrategy]:
    """Every registered stage strategy by name (cached until the plugin set changes).

    A strategy with an old-style ``builder(channels, stages, width, dropout)`` is accepted
    with a ``DeprecationWarning`` that names it and its package.

    Returns:
        Strategies keyed by name, each stamped with the package and version that registered it.

    Raises:
        PluginError: Two plugins register the same name, or a plugin registers something
            that is not a ``StageStrategy``.
    """
    return dict(cached("strategies", _collect))


def _collect() -> dict[str, StageStrategy]:
    return by_name(collect("register_stage_strategies", StageStrategy, _validate, shown="rknas.StageStrategy"),
                   "stage strategy")


def _validate(provider: str, strategy: object) -> object:
    """A strategy as registered; an old-style builder is accepted with a warning at the plugin's ``register`` line."""
    if isinstance(strategy, StageStrategy) and strategy.positional_builder:
        warnings.warn(
            f"stage strategy {strategy.name!r} from {provider}: builder(channels, stages, width, dropout) "
            "is deprecated; take one rknas.BlockSpec instead, builder(spec), and read spec.channels, "
            "spec.stages, spec.width, spec.dropout (see docs/plugins.md)",
            DeprecationWarning,
            stacklevel=2,  # re-issued at the plugin's register(...) line by registry.collect
        )
    return strategy


def list_strategies() -> list[StageStrategy]:
    """Every registered stage strategy, built-ins first.

    Returns:
        The strategies in registration order.
    """
    return list(strategies().values())


def get_strategy(name: str) -> StageStrategy:
    """One stage strategy by name.

    Args:
        name: The strategy's registered name, e.g. ``"I"``.

    Returns:
        The strategy, with its provider filled in.

    Raises:
        ConfigError: No plugin registers ``name``; the message lists the known names and
            any plugin that failed to load.
    """
    known = strategies()
    if name not in known:
        hint = f"; plugins that failed to load: {'; '.join(load_errors)}" if load_errors else ""
        raise ConfigError(f"unknown stage strategy {name!r}; known: {', '.join(known)}{hint}")
    return known[name]
