"""Parameter and FLOP counts in the paper's convention."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from rknas.config import NetworkConfig, network_summary
from rknas.errors import ConfigError
from rknas.models.network import RKCNN, build_network, parse_network_config, unchecked_blocks


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

    FlopCounterMode counts exactly these ops (not norms, activations, pooling or adds). The
    count runs on the meta device (on a copy of a live model) when the blocks allow it, and for
    real when a block reads values. Convolutions and linear layers count the same either way; an
    attention or recurrent layer in a plugin's block may not (PyTorch's CPU kernels for them are
    not counted, their meta decompositions are).

    Args:
        model: The network.
        config: Its config (default: ``model.config``), for the input shape.

    Returns:
        FLOPs of one image at inference.
    """
    config = config or model.config
    assert config.in_channels is not None and config.image_size is not None  # filled in by NetworkConfig
    shape = (1, config.in_channels, config.image_size, config.image_size)
    on_meta = next(model.parameters()).is_meta
    try:  # shapes alone decide the count: on the meta device nothing is computed (0.02 s, not 1 s)
        # A live model's pass runs on a copy: whatever a block keeps from its input (a cache)
        # must not stay behind as a meta tensor in the model that trains next.
        return _flops(model if on_meta else copy.deepcopy(model), torch.zeros(shape, device="meta"), meta=True)
    except Exception:  # a plugin block that reads values (.item(), .numpy(), ...): count it for real
        if on_meta:
            raise
        return _flops(model, torch.zeros(shape, device=next(model.parameters()).device), meta=False)


def _flops(model: nn.Module, x: torch.Tensor, meta: bool) -> int:
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    if meta:
        tensors = {name: torch.empty_like(t, device="meta") for name, t in tensors.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            torch.func.functional_call(model, tensors, (x,))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def count_network(config: NetworkConfig) -> tuple[int, int]:
    """Params and FLOPs of a config without computing anything: built on the meta device.

    A hundred times cheaper than building the network for real, for code that counts many
    configs (bench tables, size limits). A block that breaks the contract makes the meta build
    fail; the network is then built for real, so the error names the strategy and its package.

    Args:
        config: The network's config.

    Returns:
        ``(params, flops)``, equal to ``count_params`` and ``count_flops`` of ``build_network(config)``.

    Raises:
        ConfigError: The config names an unknown strategy or is invalid for one.
        PluginError: A strategy's module breaks the contract.
    """
    try:
        with unchecked_blocks(), torch.device("meta"):
            model = RKCNN(config)
        return count_params(model), count_flops(model, config)
    except ConfigError:
        raise
    except Exception:  # a block that cannot be built or run on meta (it reads values), or a broken
        # one: the checked build counts it for real, or says which strategy breaks the contract
        model = build_network(config)
        return count_params(model), count_flops(model, config)


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
    if not isinstance(config, NetworkConfig):
        config = parse_network_config(config)
    return network_summary(config, *count_network(config))
