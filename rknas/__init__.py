"""rknas: neural architecture search over Runge-Kutta CNNs, with stage strategies as plugins.

The names below are the library API that the CLI, notebooks and plugins use.
"""

from rknas._version import __version__
from rknas.errors import ConfigError, PluginError, RknasError
from rknas.export import export_model, load_model
from rknas.hookspecs import hookimpl, hookspec
from rknas.models.blocks import PreActUnit, RKBlock, concat
from rknas.models.counting import count_flops, count_params, describe
from rknas.models.network import RKCNN, NetworkConfig, build_network
from rknas.models.registry import create_model, list_models
from rknas.registry import get_strategy, list_strategies
from rknas.strategies.base import StageStrategy

__all__ = [
    "__version__",
    "hookimpl",
    "hookspec",
    "StageStrategy",
    "PreActUnit",
    "RKBlock",
    "concat",
    "NetworkConfig",
    "RKCNN",
    "build_network",
    "count_params",
    "count_flops",
    "describe",
    "create_model",
    "list_models",
    "load_model",
    "export_model",
    "list_strategies",
    "get_strategy",
    "RknasError",
    "ConfigError",
    "PluginError",
]
