"""Named models, timm-style: ``list_models()`` and ``create_model("rkcnn_i_5_5_6_k150_120_120")``.

Plugins register named models through the ``register_models`` hook (the paper's RKCNNs come
from the built-in plugin ``rknas.models.paper``); ``rknas.models.named.models()`` collects them.
Names encode the architecture unless the plugin gives one: the strategy (one letter when every
period shares it, else one per period), stages per period, ``mnist`` for the MNIST framework, k
per period (one number when all periods share it), and ``r`` per period when a period takes
more than one time step. Settings outside the name (width, dropout, attention, the input size)
need a name from the plugin: two configurations with the same name are refused as duplicates.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from rknas.config import NetworkConfig, model_name, network_summary  # noqa: F401  # model_name: re-exported, it lived here
from rknas.models.named import models
from rknas.models.sizes import shipped_counts

if TYPE_CHECKING:  # torch: imported when a network is built or counted
    from rknas.models.network import RKCNN


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a glob, sorted.

    Args:
        pattern: An ``fnmatch`` glob, e.g. ``"rkcnn_i_*"``.

    Returns:
        The matching names.
    """
    return sorted(n for n in models() if fnmatch.fnmatch(n, pattern))


def model_sizes(pattern: str = "*") -> list[dict]:
    """Each named model with its params and FLOPs at its framework's input size.

    Args:
        pattern: An ``fnmatch`` glob over the names.

    Returns:
        One ``describe()`` dict per model, with its ``model`` name added; rknas's own models are
        read from the shipped table (``rknas.models.sizes``), so listing them imports no torch.
    """
    known, out = models(), []
    for name in list_models(pattern):
        config = model_config(name)
        counts = shipped_counts(name, config, known[name].package)
        if counts is None:  # a plugin's model, or a changed one: build and count it
            from rknas.models.counting import describe

            out.append({"model": name, **describe(config)})
        else:
            out.append({"model": name, **network_summary(config, *counts)})
    return out


def model_config(name: str, **overrides) -> NetworkConfig:
    """The config of a registered model.

    Args:
        name: A name from ``list_models()``.
        **overrides: Any ``NetworkConfig`` field to change (e.g. ``classes=100``).

    Raises:
        ConfigError: No model has that name.
    """
    known = models()
    if name not in known:
        from rknas.errors import ConfigError

        raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(known))}")
    return NetworkConfig.model_validate({**known[name].config, **overrides})


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
    from rknas.models.network import build_network

    return build_network(model_config(name, **overrides))
