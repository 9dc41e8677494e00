"""The bottom layer: call a registration hook as pluggy calls it, and remember what plugins registered.

``collect(hook, kind, validate)`` calls a hook once through ``pm.hook``, so ``tryfirst``/
``trylast``, hook wrappers and tracing behave as pluggy documents; each registration is
attributed to the package of the implementation that called ``register`` (for error messages
and study provenance), checked to be a ``kind`` and stamped with that provider. What a
registration must satisfy beyond its type lives beside the domain code that uses it (the
stage strategies in ``rknas.strategies.lookup``, named models in ``rknas.models.named``, data
sets in ``rknas.data.source``, samplers in ``rknas.search.samplers``, search-space files in
``rknas.search.space``), so this module imports nothing of theirs.

Look-ups made often (every network, every sampled trial) are ``cached`` until the set of
registered plugins changes (``RknasPluginManager.generation``: any ``register``/``unregister``,
or a new manager).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import warnings
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any, Optional, TypeVar

from rknas.errors import PluginError
from rknas.plugins import PLUGINS_ENV, Registered, get_plugin_manager, provider_of

T = TypeVar("T")
R = TypeVar("R", bound=Registered)
_cache: dict[str, tuple[int, Any]] = {}  # look-up -> (manager generation, result)


def cached(key: str, collect: Callable[[], T]) -> T:
    """``collect()``, remembered until the plugin set changes."""
    generation = get_plugin_manager().generation
    hit = _cache.get(key)
    if hit is not None and hit[0] == generation:
        return hit[1]
    value = collect()
    _cache[key] = (get_plugin_manager().generation, value)
    return value


def clear_cache() -> None:
    """Forget every cached look-up (the next one calls the hooks again)."""
    _cache.clear()


class Refused(Exception):
    """Raised by a ``validate`` function: what a plugin registered breaks the hook's contract.

    The message says what it registered and why, after ``plugin <package> <version>``, e.g.
    ``registered a sampler named 'auto': names are ...``.
    """


def collect(hook_name: str, kind: type[R], validate: Callable[..., Any], *, shown: Optional[str] = None) -> list[R]:
    """Call ``hook_name`` once, as pluggy calls any hook, and return what its implementations registered.

    Pluggy orders the implementations (``tryfirst``/``trylast``, last registered first) and
    runs hook wrappers around the rest. Each ``register(*args, **kwargs)`` call is attributed
    to the implementation that made it (the one on the call stack) and becomes
    ``validate(provider, *args, **kwargs)``, which must be a ``kind``; the result is stamped
    with that plugin's package and version. The registrations come back grouped by plugin in
    the order the plugins were loaded (built-ins first), so listings and "registered twice"
    messages do not depend on call order. A warning ``validate`` raises
    points at the plugin's ``register(...)`` line.

    Args:
        hook_name: The hook, e.g. ``"register_stage_strategies"``.
        kind: The ``Registered`` dataclass every registration must be (after ``validate``).
        validate: Turns one ``register`` call's arguments into a ``kind``, given the provider
            (``"package version"``) first, for its messages; raises ``Refused``.
        shown: The type's public name in messages (default: its module and name).

    Returns:
        The registrations, each stamped with its provider.

    Raises:
        PluginError: An implementation raised, ``validate`` refused a registration, or a
            registration is not a ``kind``; the message names the plugin.
    """
    pm = get_plugin_manager()
    hook = getattr(pm.hook, hook_name)
    impls = hook.get_hookimpls()
    made: dict[int, list[tuple[tuple, dict, FrameType]]] = {id(i.plugin): [] for i in impls}

    def register(*args: Any, **kwargs: Any) -> None:
        caller = sys._getframe(1)
        made[id(_calling_plugin(impls, caller))].append((args, kwargs, caller))

    try:
        hook(register=register)
    except PluginError:
        raise
    except Exception as exc:
        failed = _failed_plugin(impls, exc)
        package, version = provider_of(failed) if failed is not None else ("(unknown plugin)", "")
        raise PluginError(f"plugin {package} {version} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
    found: list[R] = []
    for _name, plugin in pm.list_name_plugin():  # load order
        package, version = provider_of(plugin)
        who = f"{package} {version}".strip()
        for args, kwargs, caller in made.get(id(plugin), []):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    item = validate(who, *args, **kwargs)
            except Refused as exc:
                raise PluginError(f"plugin {who} {exc}") from None
            except PluginError:
                raise
            except Exception as exc:  # what it registered does not fit the hook's contract
                raise PluginError(f"plugin {who} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
            if not isinstance(item, kind):
                name = shown or f"{kind.__module__}.{kind.__qualname__}"
                raise PluginError(f"plugin {who} registered {', '.join(map(repr, args))}, which is not a {name}")
            found.append(dataclasses.replace(item, package=package, version=version))  # type: ignore[type-var]
            for w in caught:  # a warning about a registration points at the plugin's register(...) line
                warnings.warn_explicit(w.message, w.category, caller.f_code.co_filename, caller.f_lineno,
                                       module=caller.f_globals.get("__name__"), module_globals=caller.f_globals)
    return found


def by_name(items: Iterable[R], what: str) -> dict[str, R]:
    """Registrations keyed by their ``name``, in order.

    Args:
        items: What ``collect`` returned.
        what: What they are, for the message (``"stage strategy"``).

    Returns:
        ``{name: item}``.

    Raises:
        PluginError: Two registrations share a name; the message names both providers.
    """
    found: dict[str, R] = {}
    for item in items:
        name = item.name  # type: ignore[attr-defined]
        if name in found:
            raise PluginError(f"{what} {name!r} is registered twice: by {found[name].provider} and by {item.provider}; "
                              f"uninstall one or restrict plugins with {PLUGINS_ENV}")
        found[name] = item
    return found


def _impl_of(impls: list[Any], frame: FrameType) -> Any:
    """The hook implementation running in ``frame``, if any (methods told apart by ``self``)."""
    for impl in impls:
        function = getattr(impl.function, "__func__", impl.function)
        if getattr(function, "__code__", None) is frame.f_code and (
                not inspect.ismethod(impl.function) or frame.f_locals.get("self") is impl.plugin):
            return impl
    return None


def _calling_plugin(impls: list[Any], frame: Optional[FrameType]) -> Any:
    """The plugin whose implementation is on the stack above ``frame``'s caller chain (the nearest)."""
    while frame is not None:
        impl = _impl_of(impls, frame)
        if impl is not None:
            return impl.plugin
        frame = frame.f_back
    raise PluginError("register() was called outside a hook implementation (from another thread?); call it from the hook")


def _failed_plugin(impls: list[Any], exc: BaseException) -> Any:
    """The plugin whose implementation raised ``exc`` (the innermost one in its traceback)."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        impl = _impl_of(impls, tb.tb_frame)
        found = impl.plugin if impl is not None else found
        tb = tb.tb_next
    return found
