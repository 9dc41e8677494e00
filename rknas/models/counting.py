"""Parameter and FLOP counts in the paper's convention."""

from __future__ import annotations

from typing import Optional

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rknas.models.network import RKCNN, NetworkConfig, build_network


class SizeLimit(BaseModel):
    """Limits on a network's size: the one definition of "fits" for search, best, evaluate.

    A search space's ``constraints`` section is one; ``--max-params`` / ``--max-flops`` make one.
    """

    model_config = ConfigDict(extra="forbid")
    max_params: Optional[float] = None
    max_flops: Optional[float] = None

    def violation(self, params: Optional[int], flops: Optional[int]) -> Optional[str]:
        """Why a network of this size breaks the limits, or None if it fits.

        Args:
            params: Its parameter count (None counts as 0: unknown sizes are not held against it).
            flops: Its FLOPs (likewise).

        Returns:
            A phrase such as ``params 90,000 > max_params 78,410``, or None.
        """
        params, flops = params or 0, flops or 0
        if self.max_params is not None and params > self.max_params:
            return f"params {params:,} > max_params {int(self.max_params):,}"
        if self.max_flops is not None and flops > self.max_flops:
            return f"FLOPs {flops:,} > max_flops {int(self.max_flops):,}"
        return None

    def admits(self, params: Optional[int], flops: Optional[int]) -> bool:
        """Whether a network of this size fits (see ``violation``)."""
        return self.violation(params, flops) is None

    def constraint_values(self, params: Optional[int], flops: Optional[int]) -> dict[str, float]:
        """Optuna's constraint values (<= 0 feasible) for the sizes that are known and limited.

        Args:
            params: The parameter count, or None if unknown.
            flops: The FLOPs, or None if unknown.

        Returns:
            ``{"max_params": (params - limit) / limit, ...}``: relative excess per limit.
        """
        sizes = (("max_params", params, self.max_params), ("max_flops", flops, self.max_flops))
        return {name: (size - limit) / limit for name, size, limit in sizes if size is not None and limit is not None}

    @property
    def unlimited(self) -> bool:
        """No limit is set."""
        return self.max_params is None and self.max_flops is None

    def __str__(self) -> str:
        limits = [f"{v:,.0f} {what}" for v, what in ((self.max_params, "params"), (self.max_flops, "FLOPs")) if v is not None]
        return " and ".join(limits) or "no limit"


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
