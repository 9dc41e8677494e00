"""Pre-activation residual blocks (He et al. 2016, "Identity mappings"), as RK-block replacements.

``stages`` is the number of residual blocks in a row (each with its own weights); the paper's
comparison uses one per period. ``width`` scales the hidden width (default 1 = the paper).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Norm = Callable[[int], nn.Module]


def hidden_width(channels: int, width: float, divisor: int = 1) -> int:
    return max(1, int(round(width * channels / divisor)))


def _layers(norm: Norm, convs: list[nn.Conv2d], dropout: float) -> nn.Sequential:
    """norm-ReLU-conv for every conv in ``convs`` (dropout after each conv when > 0)."""
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [norm(conv.in_channels), nn.ReLU(inplace=True), conv]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class PreActBasic(nn.Module):
    """y + [norm-ReLU-conv3x3(k->m)-norm-ReLU-conv3x3(m->k)](y), bias-free convs, m = w*k."""

    def __init__(self, channels: int, norm: Norm, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        m = hidden_width(channels, width)
        self.residual = _layers(
            norm,
            [nn.Conv2d(channels, m, 3, padding=1, bias=False), nn.Conv2d(m, channels, 3, padding=1, bias=False)],
            dropout,
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.residual(y)


class PreActBottleneck(nn.Module):
    """y + [norm-ReLU-conv1x1(k->k/4)-norm-ReLU-conv3x3(k/4->k/4)-norm-ReLU-conv1x1(k/4->k)](y)."""

    def __init__(self, channels: int, norm: Norm, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        m = hidden_width(channels, width, 4)
        self.residual = _layers(
            norm,
            [
                nn.Conv2d(channels, m, 1, bias=False),
                nn.Conv2d(m, m, 3, padding=1, bias=False),
                nn.Conv2d(m, channels, 1, bias=False),
            ],
            dropout,
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.residual(y)


class ResidualStack(nn.Sequential):
    """``stages`` residual blocks in a row."""

    def __init__(self, block: type, channels: int, stages: int, norm: Norm, width: float, dropout: float):
        super().__init__(*(block(channels, norm, width, dropout) for _ in range(stages)))
