"""The plugin manager: built-in plugins and entry-point plugins, registered the same way.

This module only bootstraps the manager; ``rknas.registry`` looks things up in it (and caches
what it finds until the set of registered plugins changes: ``RknasPluginManager.generation``).

Built-ins are listed in ``DEFAULT_PLUGINS``; third-party packages declare an entry point in
the ``rknas`` group; ``RKNAS_PLUGIN_MODULES`` names importable modules to register as well
(a plugin under development, or one only a test uses). ``RKNAS_PLUGINS`` (comma-separated
package or entry-point names) restricts which installed plugins load; set it to an empty
string to load none.

Provenance (the package and version reported for everything a plugin registers) comes from
the plugin's distribution: pluggy's ``list_plugin_distinfo()`` for entry-point plugins, the
distribution that ships the module for a plugin module registered directly, and the
plugin's registered name and ``__version__`` attribute for anything else.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import sys
from collections.abc import Mapping
from functools import cache
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution, entry_points, packages_distributions
from typing import Any, Optional

import pluggy

from rknas import hookspecs
from rknas._version import __version__
from rknas.errors import PluginError

ENTRY_POINT_GROUP = "rknas"
PLUGINS_ENV = "RKNAS_PLUGINS"
MODULES_ENV = "RKNAS_PLUGIN_MODULES"  # importable modules to register as plugins (no packaging needed)
DEFAULT_PLUGINS = (
    "rknas.strategies.rk",
    "rknas.models.paper",
    "rknas.search.builtin_spaces",
    "rknas.data.builtin",
    "rknas.search.samplers",
)

_pm: Optional[RknasPluginManager] = None
_builtins: dict[str, tuple[str, str]] = {}  # built-in plugin name -> ("rknas", version)
load_errors: list[str] = []  # plugins that did not load, reported by `rknas plugins`

_generations = itertools.count(1)  # shared by every manager, so a new manager never reuses a number


class RknasPluginManager(pluggy.PluginManager):
    """A pluggy manager that counts changes to its set of plugins.

    ``generation`` changes on every ``register`` and ``unregister`` (also ``set_blocked``,
    which unregisters), however they are called: by rknas, by a test fixture, or directly
    on the manager. Look-ups in ``rknas.registry`` are cached per generation.
    """

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.generation = next(_generations)

    def register(self, plugin: Any, name: Optional[str] = None) -> Optional[str]:
        try:
            return super().register(plugin, name)
        finally:
            self.generation = next(_generations)

    def unregister(self, plugin: Any = None, name: Optional[str] = None) -> Any:
        try:
            return super().unregister(plugin, name)
        finally:
            self.generation = next(_generations)


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _allowed(ep: EntryPoint) -> bool:
    raw = os.environ.get(PLUGINS_ENV)
    if raw is None:
        return True
    wanted = {_norm(w) for w in raw.split(",") if w.strip()}
    names = {_norm(ep.name)}
    if ep.dist is not None:
        names.add(_norm(ep.dist.name))
    return bool(names & wanted)


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """Hook implementations of ``plugin`` that match no hookspec (a misspelt name)."""
    return sorted(
        caller.name
        for caller in pm.get_hookcallers(plugin) or []
        if not caller.has_spec()
    )


def _check_hooks(pm: pluggy.PluginManager, plugin: Any, name: str, where: str) -> bool:
    """Unregister ``plugin`` and record why when a hook of it matches no hookspec."""
    unknown = _unknown_hooks(pm, plugin)
    if not unknown:
        return True
    pm.unregister(plugin)
    known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
    _load_error(
        f"plugin {name!r} ({where}) was not loaded: hook {', '.join(unknown)} matches no rknas hook "
        f"(known hooks: {known})"
    )
    return False


def _register(pm: pluggy.PluginManager, plugin: Any, name: str, where: str) -> bool:
    """Register one plugin, or record why it cannot be (with its package and hook names)."""
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # arguments that no hookspec has
        _load_error(f"plugin {name!r} ({where}) was not loaded: {exc}")
        return False
    return _check_hooks(pm, plugin, name, where)


def _load_error(message: str) -> None:
    """A plugin that did not load is a warning, never a crash: rknas goes on without it."""
    load_errors.append(message)
    print(f"warning: {message}", file=sys.stderr)


def _bootstrap() -> RknasPluginManager:
    pm = RknasPluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for modname in DEFAULT_PLUGINS:
        if _register(pm, importlib.import_module(modname), modname, f"rknas {__version__}"):
            _builtins[modname] = ("rknas", __version__)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not _allowed(ep) or pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
            continue
        where = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.name
        try:  # pluggy's loader records the distribution: list_plugin_distinfo() is the provenance
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
        except pluggy.PluginValidationError as exc:  # arguments that no hookspec has
            _load_error(f"plugin {ep.name!r} ({where}) was not loaded: {exc}")
            continue
        except Exception as exc:  # a broken install must not take rknas down with it
            _load_error(f"plugin {ep.name!r} ({where}) failed to load: {type(exc).__name__}: {exc}")
            continue
        plugin = pm.get_plugin(ep.name)
        if plugin is not None:
            _check_hooks(pm, plugin, ep.name, where)
    _warn_unknown_wanted(list(entry_points(group=ENTRY_POINT_GROUP)))
    return pm


def _warn_unknown_wanted(available: list[EntryPoint]) -> None:
    """A name in ``RKNAS_PLUGINS`` that matches no installed plugin is a warning, with the names that exist."""
    raw = os.environ.get(PLUGINS_ENV)
    if not raw:
        return
    names = {_norm(ep.name) for ep in available} | {_norm(ep.dist.name) for ep in available if ep.dist is not None}
    missing = [w.strip() for w in raw.split(",") if w.strip() and _norm(w) not in names]
    if missing:
        known = ", ".join(sorted({ep.dist.name if ep.dist is not None else ep.name for ep in available})) or "none"
        _load_error(f"{PLUGINS_ENV} names {', '.join(repr(m) for m in missing)}, which no installed plugin is "
                    f"(installed: {known}); that name loads nothing")


def get_plugin_manager() -> RknasPluginManager:
    """The process-wide plugin manager, created on first use.

    Returns:
        The manager with built-ins, allowed entry-point plugins and ``RKNAS_PLUGIN_MODULES``.

    Raises:
        PluginError: A module named in ``RKNAS_PLUGIN_MODULES`` cannot be imported.
    """
    global _pm
    if _pm is None:
        _pm = _bootstrap()
    for modname in filter(None, (m.strip() for m in os.environ.get(MODULES_ENV, "").split(","))):
        if not _pm.has_plugin(modname) and not any(modname in e for e in load_errors):
            try:
                module = importlib.import_module(modname)
            except ImportError as exc:
                raise PluginError(f"{MODULES_ENV}: cannot import plugin module {modname!r}: {exc}") from None
            package, version = _module_provider(module, modname)
            _register(_pm, module, modname, f"{package} {version}".strip())
    return _pm


def reset() -> None:
    """Forget the manager; the next use loads plugins again (after the environment changed)."""
    global _pm
    _pm = None
    _builtins.clear()
    load_errors.clear()
    _distributions.cache_clear()


def plugin_env() -> dict[str, Optional[str]]:
    """The environment that decides which plugins load, to reproduce it in Ray workers."""
    return {k: os.environ.get(k) for k in (PLUGINS_ENV, MODULES_ENV)}


def apply_plugin_env(env: dict[str, Optional[str]]) -> None:
    """Make this process load the plugins ``env`` names (a worker follows its driver)."""
    if env == plugin_env():
        return
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset()


@cache
def _distributions() -> Mapping[str, list[str]]:
    """Top-level import name -> distributions that ship it (scanned once per manager)."""
    return packages_distributions()


def _module_provider(module: Any, fallback: str) -> tuple[str, str]:
    """(package, version) of the installed distribution that ships ``module``, else its own."""
    top = str(getattr(module, "__name__", "")).partition(".")[0]
    for dist_name in dict.fromkeys(_distributions().get(top, [])):
        try:
            dist = distribution(dist_name)
        except PackageNotFoundError:
            continue
        return dist.metadata["Name"] or dist_name, dist.version
    return fallback, str(getattr(module, "__version__", ""))


class Registered:
    """What every registered thing (strategy, sampler, data set, named model) shares: who provided it.

    Subclasses are dataclasses with ``package`` and ``version`` fields, which the registry fills
    in from the plugin that registered them.
    """

    package: str
    version: str

    @property
    def provider(self) -> str:
        """``"package version"`` of whoever registered it (``"unknown"`` before the registry filled it in)."""
        return f"{self.package} {self.version}".strip() or "unknown"


def provider_of(plugin: Any) -> tuple[str, str]:
    """(package, version) of a registered plugin object.

    Args:
        plugin: A plugin registered with the manager.

    Returns:
        ``("rknas", version)`` for a built-in; the distribution pluggy recorded when it
        loaded the plugin's entry point (``list_plugin_distinfo()``); for a module registered
        directly, the installed distribution that ships it; otherwise the registered name and
        the plugin's ``__version__`` attribute (or "").
    """
    pm = get_plugin_manager()
    name = str(pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin)))
    if name in _builtins and pm.get_plugin(name) is plugin:
        return _builtins[name]
    for loaded, dist in pm.list_plugin_distinfo():
        if loaded is plugin:
            return str(dist.project_name), str(dist.version)
    if inspect.ismodule(plugin):
        return _module_provider(plugin, name)
    return name, str(getattr(plugin, "__version__", ""))


def plugin_info() -> list[dict[str, Any]]:
    """One row per loaded plugin.

    Returns:
        Dicts with ``name``, ``package``, ``version`` and ``hooks`` (the hooks it implements).
    """
    pm = get_plugin_manager()
    rows = []
    for name, plugin in pm.list_name_plugin():
        package, version = provider_of(plugin)
        hooks = sorted(h.name for h in (pm.get_hookcallers(plugin) or []))
        rows.append({"name": name, "package": package, "version": version, "hooks": hooks})
    return rows

