"""The stage-strategy contract shared by built-in and third-party plugins."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

from rknas.plugins import Registered

if TYPE_CHECKING:  # torch only where a block is built: listing strategies imports none
    from torch import nn

NORMS = ("batch", "group")  # the values of BlockSpec.norm


@dataclass(frozen=True, kw_only=True)
class BlockSpec:
    """Everything rknas knows about one block when it asks a strategy's builder for it.

    A builder is called as ``builder(spec)`` and returns a module mapping y_n of shape
    (N, channels, H, W) to y_{n+1}. Fields are keyword-only and new ones always get a
    default, so a plugin that reads the fields it needs keeps working when rknas adds more;
    make variants with ``dataclasses.replace(spec, norm="group")``.

    Attributes:
        channels: k, the width of y_n (and, by default, of y_{n+1}).
        stages: s, the block's own depth knob (RK stages, layers, solver steps, ...).
        width: Bottleneck width factor (1 = the paper's).
        dropout: Dropout rate after each conv; 0 means no dropout layers.
        framework: ``"cifar"`` or ``"mnist"``: the layout of the network the block is built into.
        norm: The norm layer of that framework's feature maps: ``"batch"`` (cifar) or
            ``"group"`` (mnist); ``norm_layer`` makes one. The paper's RK blocks use
            BatchNorm in both frameworks and ignore it.
        period: 0-based index of the block's period.
        periods: Number of periods of the network.
        step: 0-based index of the block among the ``steps`` time steps (r) of its period.
        steps: Time steps (blocks in a row, each with its own weights) of the period.
        size: Side length of the period's feature maps; None where unknown (the contract
            check runs the block on 4x4 maps whatever this says).
    """

    channels: int
    stages: int
    width: float = 1.0
    dropout: float = 0.0
    framework: str = "cifar"
    norm: str = "batch"
    period: int = 0
    periods: int = 1
    step: int = 0
    steps: int = 1
    size: Optional[int] = None

    def __post_init__(self):
        if int(self.channels) < 1 or int(self.stages) < 1:
            raise ValueError(f"BlockSpec needs channels >= 1 and stages >= 1, got {self.channels}, {self.stages}")

    def norm_layer(self, channels: int) -> nn.Module:
        """A fresh norm layer of this spec's kind, with the paper's settings.

        Args:
            channels: Number of channels to normalise.

        Returns:
            ``rknas.models.blocks.batch_norm(channels)`` or ``group_norm(channels)``.

        Raises:
            ValueError: ``norm`` is not one of ``"batch"``, ``"group"``.
        """
        from rknas.models.blocks import batch_norm, group_norm

        if self.norm == "batch":
            return batch_norm(channels)
        if self.norm == "group":
            return group_norm(channels)
        raise ValueError(f"unknown norm {self.norm!r}; known: {', '.join(NORMS)}")


Builder = Callable[[BlockSpec], "nn.Module"]
LegacyBuilder = Callable[[int, int, float, float], "nn.Module"]  # deprecated: builder(channels, stages, width, dropout)


def is_positional_builder(builder: Callable[..., Any]) -> bool:
    """Whether ``builder`` is an old-style ``builder(channels, stages, width, dropout)``.

    Decided by signature: a builder that cannot be called with one argument but can be
    called with four is old-style; one that can be called both ways is new-style only
    when its first parameter is named ``spec`` or annotated ``BlockSpec``.

    Args:
        builder: The callable given as ``StageStrategy.builder``.

    Returns:
        True for the deprecated positional form, False for ``builder(spec)``.
    """
    try:
        sig = inspect.signature(builder)
    except (TypeError, ValueError):  # no signature to read (some builtins): assume the current form
        return False

    def binds(n: int) -> bool:
        try:
            sig.bind(*range(n))
        except TypeError:
            return False
        return True

    if not binds(4):
        return False
    if not binds(1):
        return True
    first = next(iter(sig.parameters.values()))
    annotation = first.annotation
    named = getattr(annotation, "__name__", annotation)
    return not (first.name == "spec" or (isinstance(named, str) and named.endswith("BlockSpec")))


@dataclass(frozen=True)
class StageStrategy(Registered):
    """One way to approximate a Runge-Kutta time step with a CNN block.

    ``builder(spec)`` gets a ``BlockSpec`` (channels k, stages s, width, dropout, framework,
    norm, period, ...) and returns a module that maps y_n of shape (N, k, H, W) to y_{n+1}.
    The old positional form ``builder(channels, stages, width, dropout)`` still works and
    is detected by its signature, with a ``DeprecationWarning`` when it is registered. By
    default y_{n+1} has k channels. A strategy whose output width differs (DenseNet- or
    CliqueNet-like blocks) declares ``out_channels(k, s)``; one that feeds the
    postprocessor something other than its output declares ``post_channels(k, s)`` and its
    module returns ``(to_next, to_post)``. Such blocks cannot be repeated within a period
    (time steps r must be 1).
    """

    name: str
    description: str
    builder: Union[Builder, LegacyBuilder]
    min_stages: int = 1
    out_channels: Optional[Callable[[int, int], int]] = None
    post_channels: Optional[Callable[[int, int], int]] = None
    # Filled in by the registry: who provided the strategy.
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)
    # Filled in from the builder's signature: True for builder(channels, stages, width, dropout).
    positional_builder: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError("StageStrategy.name must be a non-empty string")
        if any(c in self.name for c in ", "):
            raise ValueError(f"StageStrategy name {self.name!r} may not contain commas or spaces")
        if not callable(self.builder):
            raise ValueError(f"StageStrategy {self.name!r}: builder must be callable")
        if int(self.min_stages) < 1:
            raise ValueError(f"StageStrategy {self.name!r}: min_stages must be >= 1")
        object.__setattr__(self, "positional_builder", is_positional_builder(self.builder))

    def build(self, spec: BlockSpec) -> nn.Module:
        """Call the builder the way it expects (no checks: ``rknas.testing.check_strategy`` checks).

        Args:
            spec: The block to build.

        Returns:
            Whatever the builder returns.
        """
        builder: Callable[..., nn.Module] = self.builder
        if self.positional_builder:
            return builder(spec.channels, spec.stages, spec.width, spec.dropout)
        return builder(spec)

    def output_width(self, channels: int, stages: int) -> int:
        """The width of y_{n+1}, which the next block (or transition) receives.

        Args:
            channels: k, the width of y_n.
            stages: s.

        Returns:
            ``out_channels(k, s)`` when declared, else k.
        """
        return self.out_channels(channels, stages) if self.out_channels else channels

    def postprocessor_width(self, channels: int, stages: int) -> int:
        """The width of what the block hands the postprocessor.

        Args:
            channels: k, the width of y_n.
            stages: s.

        Returns:
            ``post_channels(k, s)`` when declared, else ``output_width(k, s)``.
        """
        if self.post_channels:
            return self.post_channels(channels, stages)
        return self.output_width(channels, stages)

