"""The RKCNN network: preprocessor, periods of stage blocks, transitions, postprocessor.

Structure and initialisation follow the paper's networks exactly: ``tests/test_counts.py``
builds every network of the paper's tables and checks its parameter and FLOP counts against
the printed figures, so a change here that breaks the reproduction fails there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Optional, Union

import torch
from torch import nn

from rknas.config import (  # the schemas live torch-free; imported back here where the network is built
    FRAMEWORK_NORM,
    NetworkConfig,
    format_validation_error,
    spatial_sizes,
)
from rknas.errors import ConfigError, PluginError
from rknas.models.blocks import batch_norm, group_norm, set_memory_efficient
from rknas.strategies.base import BlockSpec, StageStrategy
from rknas.strategies.lookup import get_strategy


class Attention(nn.Module):
    """Channel attention of the attentional transition (squeeze-and-excitation, ratio 2)."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(1, channels // 2)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x):
        w = x.mean(dim=(2, 3))
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(w))))
        return x * w[:, :, None, None]


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1(k_p -> k_{p+1}) [-dropout] [-attention] - AvgPool2d(2)."""

    def __init__(self, c_in: int, c_out: int, attention: bool, dropout: float):
        layers: dict[str, nn.Module] = {
            "norm": batch_norm(c_in),
            "relu": nn.ReLU(inplace=True),
            "conv": nn.Conv2d(c_in, c_out, 1, bias=False),
        }
        if dropout > 0:
            layers["drop"] = nn.Dropout(dropout)
        if attention:
            layers["attention"] = Attention(c_out)
        layers["pool"] = nn.AvgPool2d(2)
        super().__init__(OrderedDict(layers))


class Period(nn.Module):
    """``r`` stage blocks in a row, each with its own weights."""

    def __init__(self, blocks: list[nn.Module], two_outputs: bool):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.two_outputs = two_outputs

    def forward(self, y):
        for block in self.blocks:
            y = block(y)
        return y if self.two_outputs else (y, y)


def block_spec(config: NetworkConfig, period: int, step: int = 0) -> BlockSpec:
    """What a strategy's builder is told about block ``step`` of period ``period`` (0-based).

    Args:
        config: The network's (validated) configuration.
        period: Index of the period.
        step: Index of the block among the period's time steps.

    Returns:
        The spec: k, s, width and dropout of the period, the framework and its norm, where
        the block sits, and the period's feature-map size.
    """
    assert config.image_size is not None  # filled in by validation
    return BlockSpec(
        channels=config.k[period],
        stages=config.stages[period],
        width=config.width,
        dropout=config.dropout,
        framework=config.framework,
        norm=FRAMEWORK_NORM[config.framework],
        period=period,
        periods=config.periods,
        step=step,
        steps=config.steps[period],
        size=spatial_sizes(config.framework, config.image_size, config.periods)[period],
    )


_CHECK: ContextVar[bool] = ContextVar("rknas_check_blocks", default=True)


@contextmanager
def unchecked_blocks() -> Iterator[None]:
    """Build blocks without running each one (``count_network``: only shapes matter, and a block
    that breaks the contract fails the count, which then builds again with the check for its message)."""
    token = _CHECK.set(False)
    try:
        yield
    finally:
        _CHECK.reset(token)


@torch.inference_mode(False)
@torch.enable_grad()  # the check runs a backward pass, whatever the caller's grad mode
def build_stage(
    strategy: StageStrategy,
    spec: Union[BlockSpec, int],
    stages: Optional[int] = None,
    width: float = 1.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Build one block and check it honours the contract, so a broken plugin is reported
    by strategy and package instead of surfacing as a shape error deep in training.

    Args:
        strategy: The stage strategy to build.
        spec: The block to build; or, in the older form ``build_stage(strategy, channels,
            stages, width, dropout)``, its channels (a cifar ``BlockSpec`` is made from the rest).
        stages: Only with ``spec`` given as channels.
        width: Only with ``spec`` given as channels.
        dropout: Only with ``spec`` given as channels.

    Returns:
        The checked module, in the training mode it was built in, without gradients.

    Raises:
        ConfigError: ``stages`` is below the strategy's ``min_stages``.
        PluginError: The builder raised, returned no module, or the module broke the
            contract (shape, dtype, gradient); the message names strategy and package.
    """
    if not isinstance(spec, BlockSpec):
        if stages is None:
            raise TypeError("build_stage(strategy, channels, stages, ...) needs stages; or pass a BlockSpec")
        spec = BlockSpec(channels=spec, stages=stages, width=width, dropout=dropout)
    channels, stages = spec.channels, spec.stages
    who = f"stage strategy {strategy.name!r} from {strategy.provider}"
    if stages < strategy.min_stages:
        raise ConfigError(f"{who} needs stages >= {strategy.min_stages}, got {stages}")
    try:
        module = strategy.build(spec)
    except Exception as exc:
        raise PluginError(f"{who} failed to build (k={channels}, s={stages}): {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise PluginError(f"{who} builder returned {type(module).__name__}, not a torch.nn.Module")
    if not _CHECK.get():
        return module
    out_c = strategy.output_width(channels, stages)
    post_c = strategy.postprocessor_width(channels, stages)
    x = torch.randn(2, channels, 4, 4, requires_grad=True)
    was_training = module.training
    module.eval()  # no BatchNorm statistics are touched by the check
    try:
        out = module(x)
    except Exception as exc:
        raise PluginError(f"{who} raised in forward (k={channels}, s={stages}): {type(exc).__name__}: {exc}") from exc
    finally:
        module.train(was_training)
    outs = out if isinstance(out, tuple) else (out,)
    expected = [(2, out_c, 4, 4)] + ([(2, post_c, 4, 4)] if strategy.post_channels else [])
    if strategy.post_channels and not isinstance(out, tuple):
        raise PluginError(f"{who} declares post_channels, so its module must return (to_next, to_post)")
    got = [tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__ for o in outs]
    if got != expected:
        raise PluginError(f"{who} returned shape {got} for input (2, {channels}, 4, 4); the contract expects {expected}")
    if any(o.dtype != x.dtype for o in outs):
        raise PluginError(f"{who} changed the dtype from {x.dtype} to {[o.dtype for o in outs]}")
    total = sum(o.float().sum() for o in outs)
    if total.requires_grad:
        total.backward()
    if x.grad is None or not torch.isfinite(x.grad).all():
        raise PluginError(f"{who}: no finite gradient flows from its output back to its input")
    module.zero_grad(set_to_none=True)
    return module


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class RKCNN(nn.Module):
    """A multi-period RKCNN in the ``cifar`` or ``mnist`` framework."""

    def __init__(self, config: NetworkConfig, strategies: Optional[list[StageStrategy]] = None):
        super().__init__()
        self.config = config
        if strategies is None:
            strategies = [get_strategy(n) for n in config.strategy]
        cfg = config
        k = cfg.k
        assert cfg.in_channels is not None and cfg.attention is not None  # filled in by validation
        self.pre: nn.Module
        if cfg.framework == "cifar":
            self.pre = nn.Conv2d(cfg.in_channels, k[0], 3, padding=1, bias=False)
        else:
            self.pre = nn.Sequential(
                nn.Conv2d(cfg.in_channels, k[0], 3, 1),
                group_norm(k[0]),
                nn.ReLU(inplace=True),
                nn.Conv2d(k[0], k[0], 4, 2, 1),
                group_norm(k[0]),
                nn.ReLU(inplace=True),
                nn.Conv2d(k[0], k[0], 4, 2, 1),
            )
        self.periods = nn.ModuleList()
        self.transitions = nn.ModuleList()
        post_widths = []
        for p in range(cfg.periods):
            st, s, r = strategies[p], cfg.stages[p], cfg.steps[p]
            out_c = st.output_width(k[p], s)
            if out_c != k[p] and r > 1:
                raise ConfigError(
                    f"stage strategy {st.name!r} changes the width ({k[p]} -> {out_c} channels), "
                    f"so period {p + 1} can have only 1 time step, got {r}"
                )
            blocks = [build_stage(st, block_spec(cfg, p, step)) for step in range(r)]
            setting = cfg.memory_efficient_in(p)
            if setting:
                for block in blocks:  # any strategy's PreActUnits, not only the built-in blocks
                    set_memory_efficient(block, setting)
            self.periods.append(Period(blocks, two_outputs=st.post_channels is not None))
            post_widths.append(st.postprocessor_width(k[p], s))
            if p + 1 < cfg.periods:
                self.transitions.append(Transition(out_c, k[p + 1], cfg.attention, cfg.dropout))
        used = post_widths if cfg.multiscale else post_widths[-1:]
        norm = batch_norm if cfg.framework == "cifar" else group_norm
        self.post_norms = nn.ModuleList(norm(c) for c in used)
        self.classifier = nn.Linear(sum(used), cfg.classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores for a batch of images.

        Args:
            x: Normalised images, (N, in_channels, image_size, image_size).

        Returns:
            Logits, (N, classes).
        """
        y = self.pre(x)
        finals = []
        for p, period in enumerate(self.periods):
            y, to_post = period(y)
            finals.append(to_post)
            if p < len(self.transitions):
                y = self.transitions[p](y)
        used = finals if self.config.multiscale else finals[-1:]
        pooled = [torch.relu(norm(f)).mean(dim=(2, 3)) for norm, f in zip(self.post_norms, used)]
        return self.classifier(torch.cat(pooled, dim=1) if len(pooled) > 1 else pooled[0])


def build_network(config: NetworkConfig | dict) -> RKCNN:
    """Build an RKCNN from a config object or a plain dict (as stored in exported YAML).

    Args:
        config: a NetworkConfig, or a dict of its fields.

    Returns:
        The network, initialised (seed torch first for reproducible weights).

    Raises:
        ConfigError: the dict is not a valid network config.
        PluginError: a stage strategy failed to build or broke its contract.
    """
    if not isinstance(config, NetworkConfig):
        config = parse_network_config(config)
    return RKCNN(config)


def parse_network_config(data: dict, where: str = "") -> NetworkConfig:
    """Validate a dict into a NetworkConfig, turning pydantic's report into one line (after ``where``)."""
    from pydantic import ValidationError

    try:
        return NetworkConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, model=NetworkConfig)) from None
