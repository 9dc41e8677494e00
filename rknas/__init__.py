"""rknas: neural architecture search over Runge-Kutta CNNs, with stage strategies as plugins.

The names below are the library API that the CLI, notebooks and plugins use. They are handed
out lazily (PEP 562): ``import rknas`` and ``from rknas.hookspecs import hookimpl``, the first
line of every plugin, import neither torch nor Ray; ``rknas.build_network`` imports what it needs
on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rknas.errors import ConfigError, PluginError, RknasError
from rknas.hookspecs import hookimpl, hookspec

if TYPE_CHECKING:
    from rknas._version import __version__
    from rknas.config import NetworkConfig
    from rknas.export import export_model, load_model
    from rknas.models.blocks import PreActUnit, RKBlock, concat
    from rknas.models.counting import count_flops, count_params, describe
    from rknas.models.network import RKCNN, build_network
    from rknas.models.registry import create_model, list_models
    from rknas.strategies.base import BlockSpec, StageStrategy
    from rknas.strategies.lookup import get_strategy, list_strategies

# name -> the module that defines it (imported on first access)
_LAZY = {
    "__version__": "rknas._version",  # reading the installed metadata scans site-packages (35 ms)
    "StageStrategy": "rknas.strategies.base",
    "BlockSpec": "rknas.strategies.base",
    "PreActUnit": "rknas.models.blocks",
    "RKBlock": "rknas.models.blocks",
    "concat": "rknas.models.blocks",
    "NetworkConfig": "rknas.config",
    "RKCNN": "rknas.models.network",
    "build_network": "rknas.models.network",
    "count_params": "rknas.models.counting",
    "count_flops": "rknas.models.counting",
    "describe": "rknas.models.counting",
    "create_model": "rknas.models.registry",
    "list_models": "rknas.models.registry",
    "load_model": "rknas.export",
    "export_model": "rknas.export",
    "list_strategies": "rknas.strategies.lookup",
    "get_strategy": "rknas.strategies.lookup",
}

__all__ = [
    "__version__", "hookimpl", "hookspec", "RknasError", "ConfigError", "PluginError",
    "StageStrategy", "BlockSpec", "PreActUnit", "RKBlock", "concat", "NetworkConfig", "RKCNN", "build_network",
    "count_params", "count_flops", "describe", "create_model", "list_models", "load_model", "export_model",
    "list_strategies", "get_strategy",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rknas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
