"""The stage-strategy contract shared by built-in and third-party plugins."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from torch import nn

Builder = Callable[[int, int, float, float], nn.Module]


@dataclass(frozen=True)
class StageStrategy:
    """One way to approximate a Runge-Kutta time step with a CNN block.

    ``builder(channels, stages, width, dropout)`` returns a module that maps y_n of shape
    (N, k, H, W) to y_{n+1}. By default y_{n+1} has k channels. A strategy whose output
    width differs (DenseNet- or CliqueNet-like blocks) declares ``out_channels(k, s)``; one
    that feeds the postprocessor something other than its output declares
    ``post_channels(k, s)`` and its module returns ``(to_next, to_post)``. Such blocks
    cannot be repeated within a period (time steps r must be 1).
    """

    name: str
    description: str
    builder: Builder
    min_stages: int = 1
    out_channels: Optional[Callable[[int, int], int]] = None
    post_channels: Optional[Callable[[int, int], int]] = None
    # Filled in by the registry: who provided the strategy.
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ValueError("StageStrategy.name must be a non-empty string")
        if any(c in self.name for c in ", "):
            raise ValueError(f"StageStrategy name {self.name!r} may not contain commas or spaces")
        if not callable(self.builder):
            raise ValueError(f"StageStrategy {self.name!r}: builder must be callable")
        if int(self.min_stages) < 1:
            raise ValueError(f"StageStrategy {self.name!r}: min_stages must be >= 1")

    def output_width(self, channels: int, stages: int) -> int:
        return self.out_channels(channels, stages) if self.out_channels else channels

    def postprocessor_width(self, channels: int, stages: int) -> int:
        if self.post_channels:
            return self.post_channels(channels, stages)
        return self.output_width(channels, stages)

    @property
    def provider(self) -> str:
        return f"{self.package} {self.version}".strip() or "unknown"
