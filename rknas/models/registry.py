"""Named models, timm-style: ``list_models()`` and ``create_model("rkcnn_i_5_5_6_k150_120_120")``.

Names encode the configuration: strategy, stages per period, then ``mnist`` for the MNIST
framework, then k per period (one number when all periods share it).
"""

from __future__ import annotations

import fnmatch

from rknas.models.counting import describe
from rknas.models.network import RKCNN, NetworkConfig, build_network

_REGISTRY: dict[str, dict] = {}


def model_name(config: NetworkConfig) -> str:
    strat = "_".join(dict.fromkeys(s.lower() for s in config.strategy))
    parts = ["rkcnn", strat, *map(str, config.stages)]
    if config.framework == "mnist":
        parts.append("mnist")
    ks = config.k if len(set(config.k)) > 1 else config.k[:1]
    parts.append("k" + "_".join(map(str, ks)))
    return "_".join(parts)


def register_model(config: dict, name: str | None = None) -> str:
    """Add a named configuration; names are unique."""
    cfg = NetworkConfig.model_validate(config)
    name = name or model_name(cfg)
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = dict(config)
    return name


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob, sorted.

    Args:
        pattern: An ``fnmatch`` glob, e.g. ``"rkcnn_i_*"``.

    Returns:
        The matching names.
    """
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_sizes(pattern: str = "*") -> list[dict]:
    """Each named model with its params and FLOPs at its framework's input size.

    Args:
        pattern: An ``fnmatch`` glob over the names.

    Returns:
        One ``describe()`` dict per model, with its ``model`` name added.
    """
    return [{"model": name, **describe(model_config(name))} for name in list_models(pattern)]


def model_config(name: str, **overrides) -> NetworkConfig:
    """The config of a registered model.

    Args:
        name: A name from ``list_models()``.
        **overrides: Any ``NetworkConfig`` field to change (e.g. ``classes=100``).

    Raises:
        ConfigError: No model has that name.
    """
    if name not in _REGISTRY:
        from rknas.errors import ConfigError

        raise ConfigError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    return NetworkConfig.model_validate({**_REGISTRY[name], **overrides})


def create_model(name: str, **overrides) -> RKCNN:
    """Build a registered model, timm-style.

    Args:
        name: A name from ``list_models()``, e.g. ``"rkcnn_i_5_5_6_k150_120_120"``.
        **overrides: Any ``NetworkConfig`` field to change (e.g. ``classes=100``).

    Returns:
        The network, initialised as the paper describes.

    Raises:
        ConfigError: Unknown name or invalid override.
    """
    return build_network(model_config(name, **overrides))


# The RKCNNs of the paper's Tables 2-5 (CIFAR-10 heads; pass classes=100 for CIFAR-100).
for _s, _ks in (("E", (24, 30, 32)), ("I", (20, 26, 32)), ("R", (20, 26, 32))):
    for _k in _ks:
        register_model({"framework": "mnist", "strategy": _s, "stages": 2, "k": _k})
register_model({"strategy": "E", "stages": [2, 2, 2], "k": 120})
for _s in ("I", "R"):
    for _kp in ([26, 28, 28], [78, 78, 80], [120]):
        register_model({"strategy": _s, "stages": [2, 2, 2], "k": _kp})
for _s, _stages, _kps in (
    ("E", [5, 5, 5], ([80], [120])),
    ("I", [5, 5, 5], ([80], [120])),
    ("I", [5, 5, 6], ([150, 120, 120],)),
    ("R", [5, 5, 5], ([80], [120])),
    ("R", [3, 4, 4], ([180],)),
):
    for _kp in _kps:
        register_model({"strategy": _s, "stages": _stages, "k": _kp})
