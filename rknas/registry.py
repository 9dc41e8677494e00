"""Look-ups over what plugins registered: stage strategies, named models, search-space files, data sets, samplers.

Each hook is called once through ``pm.hook``, so ``tryfirst``/``trylast``, hook wrappers and
tracing behave as pluggy documents; whatever a plugin registers is attributed to its package
(for error messages and study provenance) by the implementation that called ``register``.

Strategies and named models are looked up often (every network, every sampled trial), so
they are collected once and cached until the set of registered plugins changes
(``RknasPluginManager.generation``: any ``register``/``unregister``, or a new manager).
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Optional, TypeVar

from rknas.data.source import DataSource
from rknas.errors import ConfigError, PluginError
from rknas.plugins import PLUGINS_ENV, Registered, get_plugin_manager, load_errors, provider_of
from rknas.strategies.base import StageStrategy

T = TypeVar("T")
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


@dataclasses.dataclass(frozen=True)
class NamedModel(Registered):
    """A named network configuration and the package that registered it."""

    name: str
    config: Mapping[str, Any]
    package: str = ""
    version: str = ""



def collect(hook_name: str, accept: Callable[..., None]) -> None:
    """Call ``hook_name`` once, as pluggy calls any hook, and hand each registration to ``accept`` with its provider.

    Pluggy orders the implementations (``tryfirst``/``trylast``, last registered first) and
    runs hook wrappers around the rest. Each ``register(...)`` call is attributed to the
    implementation that made it (the one on the call stack), and the registrations reach
    ``accept`` grouped by plugin in the order the plugins were loaded (built-ins first), so
    listings and "registered twice" messages do not depend on call order.
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
    for _name, plugin in pm.list_name_plugin():  # load order
        package, version = provider_of(plugin)
        for args, kwargs, caller in made.get(id(plugin), []):
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    accept(args, package, version, **kwargs)
            except PluginError:
                raise
            except Exception as exc:  # what it registered does not fit the hook's contract
                raise PluginError(f"plugin {package} {version} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
            for w in caught:  # a warning about a registration points at the plugin's register(...) line
                warnings.warn_explicit(w.message, w.category, caller.f_code.co_filename, caller.f_lineno,
                                       module=caller.f_globals.get("__name__"), module_globals=caller.f_globals)


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
    return dict(cached("strategies", _collect_strategies))


def _collect_strategies() -> dict[str, StageStrategy]:
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
        if strategy.positional_builder:
            warnings.warn(
                f"stage strategy {strategy.name!r} from {strategy.provider}: builder(channels, stages, width, dropout) "
                "is deprecated; take one rknas.BlockSpec instead, builder(spec), and read spec.channels, "
                "spec.stages, spec.width, spec.dropout (see docs/plugins.md)",
                DeprecationWarning,
                stacklevel=2,  # re-issued at the plugin's register(...) line by _call_each
            )
        found[strategy.name] = strategy

    collect("register_stage_strategies", accept)
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


def models() -> dict[str, NamedModel]:
    """Every named model plugins registered, by name (cached until the plugin set changes).

    Returns:
        Named models keyed by name, built-in paper models first.

    Raises:
        PluginError: Two plugins register the same name, or a config is not a valid
            ``NetworkConfig``.
    """
    return dict(cached("models", _collect_models))


def _collect_models() -> dict[str, NamedModel]:
    from pydantic import ValidationError

    from rknas.config import NetworkConfig, format_validation_error, model_name

    found: dict[str, NamedModel] = {}

    def accept(args: tuple, package: str, version: str, name: Optional[str] = None) -> None:
        config, *rest = args
        name = rest[0] if rest else name
        where = f"plugin {package} {version}".strip()
        if not isinstance(config, Mapping):
            raise PluginError(f"{where} registered model config {config!r}, which is not a mapping of NetworkConfig fields")
        try:
            cfg = NetworkConfig.model_validate(dict(config))
        except ValidationError as exc:
            raise PluginError(f"{where} registered an invalid model config: {format_validation_error(exc)}") from None
        model = NamedModel(str(name or model_name(cfg)), dict(config), package, version)
        if model.name in found:
            raise PluginError(
                f"model {model.name!r} is registered twice: by {found[model.name].provider} and by {model.provider}; "
                f"uninstall one or restrict plugins with {PLUGINS_ENV}"
            )
        found[model.name] = model

    collect("register_models", accept)
    return found


def search_space_sources() -> list[tuple[Path, str]]:
    """(path, package) for every search-space file or directory a plugin registered."""
    found: list[tuple[Path, str]] = []
    collect("register_search_spaces", lambda args, p, v: found.append((Path(args[0]), p)))
    return found


def datasets() -> dict[str, DataSource]:
    """Every registered data source by name, built-ins first.

    Returns:
        Sources keyed by name, each stamped with the package and version that registered it.
        A plugin that still calls ``register(name, loader)`` gets a ``DataSource`` with only
        ``name`` and ``load`` (and a ``DeprecationWarning``).

    Raises:
        PluginError: Two plugins register the same data-set name, or a plugin registers
            something that is neither a ``DataSource`` nor a ``(name, loader)`` pair.
    """
    found: dict[str, DataSource] = {}

    def accept(args: tuple, package: str, version: str) -> None:
        if len(args) == 1 and isinstance(args[0], DataSource):
            source = args[0]
        elif len(args) == 2 and isinstance(args[0], str) and callable(args[1]):
            warnings.warn(
                f"plugin {f'{package} {version}'.strip()}: register({args[0]!r}, loader) is deprecated; register a "
                f"rknas.data.DataSource(name={args[0]!r}, load=loader, ...) instead",
                DeprecationWarning,
                stacklevel=2,  # re-issued at the plugin's register(...) line by _call_each
            )
            source = DataSource(name=args[0], load=args[1])
        else:
            shown = ", ".join(map(repr, args))
            raise PluginError(f"plugin {f'{package} {version}'.strip()} registered {shown}, which is not a rknas.data.DataSource")
        source = dataclasses.replace(source, package=package, version=version)
        if source.name in found:
            raise PluginError(
                f"data set {source.name!r} is registered twice: by {found[source.name].provider} and by {source.provider}"
            )
        found[source.name] = source

    collect("register_datasets", accept)
    return found
