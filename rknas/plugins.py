"""The plugin manager: built-in plugins and entry-point plugins, registered the same way.

This module only bootstraps the manager; ``rknas.registry`` looks things up in it.

Built-ins are listed in ``DEFAULT_PLUGINS``; third-party packages declare an entry point in
the ``rknas`` group; ``RKNAS_PLUGIN_MODULES`` names importable modules to register as well
(a plugin under development, or one only a test uses). ``RKNAS_PLUGINS`` (comma-separated
package or entry-point names) restricts which installed plugins load; set it to an empty
string to load none.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import EntryPoint, entry_points
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
    "rknas.search.builtin_spaces",
    "rknas.data.builtin",
)

_pm: Optional[pluggy.PluginManager] = None
_providers: dict[str, tuple[str, str]] = {}  # plugin name -> (package, version)
load_errors: list[str] = []  # plugins that did not load, reported by `rknas plugins`


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


def _register(pm: pluggy.PluginManager, plugin: Any, name: str, package: str, version: str) -> None:
    """Register one plugin, or record why it cannot be (with its package and hook names)."""
    where = f"{package} {version}".strip()
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:  # arguments that no hookspec has
        _load_error(f"plugin {name!r} ({where}) was not loaded: {exc}")
        return
    unknown = _unknown_hooks(pm, plugin)
    if unknown:
        pm.unregister(plugin)
        known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
        _load_error(
            f"plugin {name!r} ({where}) was not loaded: hook {', '.join(unknown)} matches no rknas hook "
            f"(known hooks: {known})"
        )
        return
    _providers[name] = (package, version)


def _load_error(message: str) -> None:
    """A plugin that did not load is a warning, never a crash: rknas goes on without it."""
    load_errors.append(message)
    print(f"warning: {message}", file=sys.stderr)


def _bootstrap() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for modname in DEFAULT_PLUGINS:
        _register(pm, importlib.import_module(modname), modname, "rknas", __version__)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not _allowed(ep) or pm.has_plugin(ep.name):
            continue
        package = ep.dist.name if ep.dist else ep.name
        version = ep.dist.version if ep.dist else ""
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken install must not take rknas down with it
            _load_error(f"plugin {ep.name!r} ({package} {version}) failed to load: {type(exc).__name__}: {exc}")
            continue
        _register(pm, plugin, ep.name, package, version)
    return pm


def get_plugin_manager() -> pluggy.PluginManager:
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
            _register(_pm, module, modname, modname, str(getattr(module, "__version__", "")))
    return _pm


def reset() -> None:
    """Forget the manager; the next use loads plugins again (after the environment changed)."""
    global _pm
    _pm = None
    _providers.clear()
    load_errors.clear()


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


def provider_of(plugin: Any) -> tuple[str, str]:
    """(package, version) of a registered plugin object."""
    pm = get_plugin_manager()
    name = str(pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin)))
    if name in _providers:
        return _providers[name]
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

