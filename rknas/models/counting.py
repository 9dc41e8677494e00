"""Parameter and FLOP counts in the paper's convention."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rknas.models.network import NetworkConfig, RKCNN, build_network


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: RKCNN, config: NetworkConfig | None = None) -> int:
    """2 x multiply-accumulates of every conv and linear layer, one image, inference.

    FlopCounterMode counts exactly these ops (not norms, activations, pooling or adds).
    """
    config = config or model.config
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
    """Build a network and summarise it: name, per-period layout, params, FLOPs."""
    model = build_network(config)
    cfg = model.config
    return {
        "name": cfg.name,
        "framework": cfg.framework,
        "periods": cfg.periods,
        "strategy": cfg.strategy,
        "stages": cfg.stages,
        "k": cfg.k,
        "steps": cfg.steps,
        "classes": cfg.classes,
        "in_channels": cfg.in_channels,
        "image_size": cfg.image_size,
        "attention": cfg.attention,
        "multiscale": cfg.multiscale,
        "width": cfg.width,
        "dropout": cfg.dropout,
        "params": count_params(model),
        "flops": count_flops(model, cfg),
    }
