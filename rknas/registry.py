"""Look-ups over what plugins registered: stage strategies, search-space files, data sets.

Each hook is called through ``pm.hook`` one plugin at a time (a pluggy subset caller), so
tracing, ``tryfirst`` and wrappers behave as pluggy documents, and whatever a plugin
registers is attributed to its package for error messages and study provenance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rknas.errors import ConfigError, PluginError
from rknas.plugins import PLUGINS_ENV, get_plugin_manager, load_errors, provider_of
from rknas.strategies.base import StageStrategy


def _call_each(hook_name: str, accept: Callable[[tuple, str, str], None]) -> None:
    """Call ``hook_name`` on every plugin with a ``register`` callback of its own."""
    pm = get_plugin_manager()
    plugins = list({id(i.plugin): i.plugin for i in getattr(pm.hook, hook_name).get_hookimpls()}.values())
    for plugin in plugins:
        package, version = provider_of(plugin)

        def register(*args: Any, _p: str = package, _v: str = version) -> None:
            accept(args, _p, _v)

        caller = pm.subset_hook_caller(hook_name, remove_plugins=[p for p in plugins if p is not plugin])
        try:
            caller(register=register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {package} {version} failed in {hook_name}: {type(exc).__name__}: {exc}"
            ) from exc


def strategies() -> dict[str, StageStrategy]:
    """Every registered stage strategy by name.

    Returns:
        Strategies keyed by name, each stamped with the package and version that registered it.

    Raises:
        PluginError: Two plugins register the same name, or a plugin registers something
            that is not a ``StageStrategy``.
    """
    found: dict[str, StageStrategy] = {}

    def accept(args: tuple, package: str, version: str) -> None:
        (strategy,) = args
        if not isinstance(strategy, StageStrategy):
            raise PluginError(f"plugin {package} {version} registered {strategy!r}, which is not a rknas.StageStrategy")
        strategy = dataclasses.replace(strategy, package=package, version=version)
        if strategy.name in found:
            raise PluginError(
                f"stage strategy {strategy.name!r} is registered twice: by {found[strategy.name].provider} "
                f"and by {strategy.provider}; uninstall one or restrict plugins with {PLUGINS_ENV}"
            )
        found[strategy.name] = strategy

    _call_each("register_stage_strategies", accept)
    return found


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


def search_space_sources() -> list[tuple[Path, str]]:
    """(path, package) for every search-space file or directory a plugin registered."""
    found: list[tuple[Path, str]] = []
    _call_each("register_search_spaces", lambda args, p, v: found.append((Path(args[0]), p)))
    return found


def datasets() -> dict[str, tuple[Callable[..., Any], str]]:
    """Data-set loaders by name, with the package that provides each.

    Raises:
        PluginError: Two plugins register the same data-set name.
    """
    found: dict[str, tuple[Callable[..., Any], str]] = {}

    def accept(args: tuple, package: str, version: str) -> None:
        name, loader = args
        if name in found:
            raise PluginError(f"data set {name!r} is registered twice: by {found[name][1]} and by {package} {version}")
        found[name] = (loader, f"{package} {version}".strip())

    _call_each("register_datasets", accept)
    return found
