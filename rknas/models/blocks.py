"""Building blocks shared by every stage strategy: the pre-activation unit and the RK block."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the paper's settings (eps 1e-3, PyTorch momentum 0.01)."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(min(32, k), k) as in the ODE-Net code; falls back to a divisor of k.

    The parameter count (2k) does not depend on the group count, so the fallback for
    widths the paper never used leaves the counts untouched.
    """
    groups = min(32, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def concat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Channel-wise concatenation (y_n first, then stages in order), skipping a copy for one input."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim=1)


class PreActUnit(nn.Sequential):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3: the unit each RK stage is made of.

    ``width`` scales the bottleneck (1x1 output = round(width * out_channels)); dropout, when
    > 0, follows each convolution as in the paper's SVHN setting. Convolutions are bias-free.
    """

    def __init__(self, in_channels: int, out_channels: int, width: float = 1.0, dropout: float = 0.0):
        mid = max(1, int(round(width * out_channels)))
        layers: list[tuple[str, nn.Module]] = [
            ("norm1", batch_norm(in_channels)),
            ("relu1", nn.ReLU(inplace=True)),
            ("conv1", nn.Conv2d(in_channels, mid, 1, bias=False)),
        ]
        if dropout > 0:
            layers.append(("drop1", nn.Dropout(dropout)))
        layers += [
            ("norm2", batch_norm(mid)),
            ("relu2", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(mid, out_channels, 3, padding=1, bias=False)),
        ]
        if dropout > 0:
            layers.append(("drop2", nn.Dropout(dropout)))
        super().__init__(OrderedDict(layers))
        self.in_channels = in_channels
        self.out_channels = out_channels


class RKBlock(nn.Module):
    """One RK time step: y_{n+1} = y_n + sum_i e_i (Algorithm 1 of the paper).

    Phase I is a dense block growing ``stages`` times by ``channels`` (Eq 26: x_i from y_n and
    x_1..x_{i-1}). Phase II (mode I or R, own weights) recomputes each increment from y_n and
    the other stages: R uses the Phase-I values x_j (Eq 27), I replaces earlier ones by the
    already updated e_j (Eq 28). Mode E stops after Phase I (e_i = x_i, Eq 17).
    """

    MODES = ("E", "I", "R")

    def __init__(self, channels: int, stages: int, mode: str = "E", width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"RKBlock mode must be one of {self.MODES}, got {mode!r}")
        if mode != "E" and stages < 2:
            raise ValueError(f"RKBlock mode {mode} needs stages >= 2 (alternate update), got {stages}")
        self.channels, self.stages, self.mode = channels, stages, mode
        k = channels
        self.phase1 = nn.ModuleList(PreActUnit(i * k, k, width, dropout) for i in range(1, stages + 1))
        self.phase2 = (
            nn.ModuleList(PreActUnit(stages * k, k, width, dropout) for _ in range(stages))
            if mode != "E"
            else nn.ModuleList()
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        feats = [y]
        for unit in self.phase1:
            feats.append(unit(concat(feats)))
        xs = feats[1:]
        if self.mode == "E":
            increments = xs
        elif self.mode == "R":
            increments = [unit(concat([y, *xs[:i], *xs[i + 1 :]])) for i, unit in enumerate(self.phase2)]
        else:  # "I": stage i sees the updated e_1..e_{i-1} and the Phase-I x_{i+1}..x_s
            increments = []
            for i, unit in enumerate(self.phase2):
                increments.append(unit(concat([y, *increments, *xs[i + 1 :]])))
        out = y
        for e in increments:
            out = out + e
        return out
