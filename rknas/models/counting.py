"""Parameter and FLOP counts in the paper's convention."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rknas.config import NetworkConfig, network_summary
from rknas.models.network import RKCNN, build_network


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters, as the paper's tables count them.

    Args:
        model: Any module.

    Returns:
        The number of parameter elements.
    """
    return sum(p.numel() for p in model.parameters())


def count_flops(model: RKCNN, config: NetworkConfig | None = None) -> int:
    """FLOPs in the paper's convention: 2 x multiply-accumulates of every conv and linear layer.

    FlopCounterMode counts exactly these ops (not norms, activations, pooling or adds).

    Args:
        model: The network.
        config: Its config (default: ``model.config``), for the input shape.

    Returns:
        FLOPs of one image at inference.
    """
    config = config or model.config
    assert config.in_channels is not None and config.image_size is not None  # filled in by NetworkConfig
    x = torch.zeros(1, config.in_channels, config.image_size, config.image_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def describe(config: NetworkConfig | dict) -> dict:
    """Build a network and summarise it.

    Args:
        config: A ``NetworkConfig`` or a plain dict of its fields.

    Returns:
        The paper-style ``name``, every config field, ``params`` and ``flops``.

    Raises:
        ConfigError: The config is invalid or names an unknown strategy.
        PluginError: A strategy's module breaks the contract.
    """
    model = build_network(config)
    return network_summary(model.config, count_params(model), count_flops(model, model.config))
