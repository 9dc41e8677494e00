"""The plugin manager: built-in plugins and entry-point plugins, registered the same way.

Built-ins are listed in ``DEFAULT_PLUGINS``; third-party packages declare an entry point in
the ``rknas`` group; ``RKNAS_PLUGIN_MODULES`` names importable modules to register as well
(a plugin under development, or one only a test uses). ``RKNAS_PLUGINS`` (comma-separated package or entry-point names)
restricts which installed plugins load; set it to an empty string to load none.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import pluggy

from rknas import hookspecs
from rknas.errors import ConfigError, PluginError
from rknas.strategies.base import StageStrategy

ENTRY_POINT_GROUP = "rknas"
PLUGINS_ENV = "RKNAS_PLUGINS"
MODULES_ENV = "RKNAS_PLUGIN_MODULES"  # importable modules to register as plugins (no packaging needed)
DEFAULT_PLUGINS = (
    "rknas.strategies.rk",
    "rknas.search.builtin_spaces",
    "rknas.data.builtin",
)

_pm: pluggy.PluginManager | None = None
_providers: dict[str, tuple[str, str]] = {}  # plugin name -> (package, version)
load_errors: list[str] = []  # entry points that failed to import, reported by `rknas plugins`


def _allowed(ep) -> bool:
    raw = os.environ.get(PLUGINS_ENV)
    if raw is None:
        return True
    wanted = {w.strip().lower().replace("_", "-") for w in raw.split(",") if w.strip()}
    names = {ep.name.lower().replace("_", "-")}
    if ep.dist is not None:
        names.add(ep.dist.name.lower().replace("_", "-"))
    return bool(names & wanted)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager, created on first use."""
    global _pm
    if _pm is None:
        from rknas import __version__

        pm = pluggy.PluginManager("rknas")
        pm.add_hookspecs(hookspecs)
        for modname in DEFAULT_PLUGINS:
            pm.register(importlib.import_module(modname), name=modname)
            _providers[modname] = ("rknas", __version__)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if not _allowed(ep) or pm.has_plugin(ep.name):
                continue
            package = ep.dist.name if ep.dist else ep.name
            version = ep.dist.version if ep.dist else ""
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken install must not take rknas down with it
                msg = f"plugin {ep.name!r} ({package} {version}) failed to load: {type(exc).__name__}: {exc}"
                load_errors.append(msg)
                print(f"warning: {msg}", file=sys.stderr)
                continue
            pm.register(plugin, name=ep.name)
            _providers[ep.name] = (package, version)
        _pm = pm
    for modname in filter(None, (m.strip() for m in os.environ.get(MODULES_ENV, "").split(","))):
        if not _pm.has_plugin(modname):
            try:
                module = importlib.import_module(modname)
            except ImportError as exc:
                raise PluginError(f"{MODULES_ENV}: cannot import plugin module {modname!r}: {exc}") from None
            _pm.register(module, name=modname)
            _providers[modname] = (modname, str(getattr(module, "__version__", "")))
    return _pm


def reset() -> None:
    """Forget the manager; the next use loads plugins again (after the environment changed)."""
    global _pm
    _pm = None
    _providers.clear()
    load_errors.clear()


def plugin_env() -> dict:
    """The environment that decides which plugins load, to reproduce it in Ray workers."""
    return {k: os.environ.get(k) for k in (PLUGINS_ENV, MODULES_ENV)}


def apply_plugin_env(env: dict) -> None:
    """Make this process load the plugins ``env`` names (a worker follows its driver)."""
    if env == plugin_env():
        return
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset()


def provider_of(plugin: Any) -> tuple[str, str]:
    """(package, version) of a registered plugin object."""
    pm = get_plugin_manager()
    name = pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))
    if name in _providers:
        return _providers[name]
    return name, str(getattr(plugin, "__version__", ""))


def _call_each(hook_name: str, accept: Callable[[Any, str, str], None]) -> None:
    """Call every implementation of a registration hook with its own ``register`` callback,
    so that whatever it registers is attributed to its package."""
    pm = get_plugin_manager()
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        package, version = provider_of(impl.plugin)

        def register(*args, _p=package, _v=version):
            accept(args, _p, _v)

        try:
            impl.function(register=register)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin {package} {version} failed in {hook_name}: {type(exc).__name__}: {exc}"
            ) from exc


def strategies() -> dict[str, StageStrategy]:
    """Every registered stage strategy by name; a duplicate name is an error naming both."""
    found: dict[str, StageStrategy] = {}

    def accept(args, package, version):
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
    return list(strategies().values())


def get_strategy(name: str) -> StageStrategy:
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


def datasets() -> dict[str, tuple[Callable, str]]:
    """Data-set loaders by name, with the package that provides each."""
    found: dict[str, tuple[Callable, str]] = {}

    def accept(args, package, version):
        name, loader = args
        if name in found:
            raise PluginError(f"data set {name!r} is registered twice: by {found[name][1]} and by {package} {version}")
        found[name] = (loader, f"{package} {version}".strip())

    _call_each("register_datasets", accept)
    return found


def plugin_info() -> list[dict]:
    """One row per loaded plugin: name, package, version, hooks it implements."""
    pm = get_plugin_manager()
    rows = []
    for name, plugin in pm.list_name_plugin():
        package, version = provider_of(plugin)
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        rows.append({"name": name, "package": package, "version": version, "hooks": hooks})
    return rows
