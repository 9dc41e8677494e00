"""rknas: neural architecture search over Runge-Kutta CNNs, with stage strategies as plugins."""

from importlib.metadata import PackageNotFoundError, version as _version

import pluggy

try:
    __version__ = _version("rknas")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

hookimpl = pluggy.HookimplMarker("rknas")

from rknas.errors import ConfigError, PluginError, RknasError  # noqa: E402
from rknas.strategies.base import StageStrategy  # noqa: E402
from rknas.models.blocks import PreActUnit, RKBlock, concat  # noqa: E402
from rknas.models.network import NetworkConfig, RKCNN, build_network  # noqa: E402
from rknas.models.counting import count_flops, count_params, describe  # noqa: E402
from rknas.models.registry import create_model, list_models  # noqa: E402
from rknas.plugins import get_strategy, list_strategies  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
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
    "list_strategies",
    "get_strategy",
    "RknasError",
    "ConfigError",
    "PluginError",
]
