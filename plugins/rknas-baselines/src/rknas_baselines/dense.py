"""DenseNet's dense block and CliqueNet's clique block with T = ``stages`` layers per period.

Both use rknas's PreActUnit (BN-ReLU-conv1x1(-> w*k)-BN-ReLU-conv3x3(-> k), the bottleneck of
the RK blocks), so they differ from RKCNN-E / RKCNN-I only where the original models differ.

- Dense block: x_i = unit_i(concat(y, x_1..x_{i-1})); it outputs concat(y, x_1..x_T), (T+1)k
  channels, to the transition and (multiscale) to the postprocessor.
- Clique block (Yang et al. 2018): Stage I is the same dense growth. Stage II updates the
  layers alternately, x_i' = g_i(concat(x_1'..x_{i-1}', x_{i+1}..x_T)), without y, reusing
  the weights: the 1x1 kernel slice from layer j to layer i is shared between the stages
  (Stage I holds the slices j < i, Stage II adds the backward slices j > i), and g_i reuses
  layer i's 3x3 conv; Stage II has its own BN layers. It sends the T*k Stage-II features
  to the transition and concat(y, Stage-II features) to the postprocessor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rknas import PreActUnit, concat
from rknas.models.blocks import batch_norm


class DenseBlock(nn.Module):
    def __init__(self, channels: int, stages: int, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        k = channels
        self.units = nn.ModuleList(PreActUnit(i * k, k, width, dropout) for i in range(1, stages + 1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        feats = [y]
        for unit in self.units:
            feats.append(unit(concat(feats)))
        return concat(feats)


class CliqueBlock(nn.Module):
    """Returns (Stage-II features, concat(y, Stage-II features))."""

    def __init__(self, channels: int, stages: int, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        if stages < 2:
            raise ValueError(f"a clique block needs at least 2 layers to update alternately, got {stages}")
        k, s = channels, stages
        self.channels, self.stages = k, s
        self.stage1 = nn.ModuleList(PreActUnit(i * k, k, width, dropout) for i in range(1, s + 1))
        mid = self.stage1[0].conv1.out_channels
        # backward[i]: 1x1 kernel slices from layers i+1..T (0-based i+1..s-1) into layer i.
        self.backward_weights = nn.ParameterList(
            nn.Parameter(torch.randn(mid, (s - 1 - i) * k, 1, 1) * math.sqrt(2.0 / ((s - 1) * k)))
            for i in range(s - 1)
        )
        self.stage2_norm_in = nn.ModuleList(batch_norm((s - 1) * k) for _ in range(s))
        self.stage2_norm_mid = nn.ModuleList(batch_norm(mid) for _ in range(s))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def stage2_weight(self, i: int) -> torch.Tensor:
        """Layer i's Stage-II 1x1 kernel: shared forward slices from Stage I, then its own backward slices."""
        forward_slices = self.stage1[i].conv1.weight[:, self.channels :]
        if i == self.stages - 1:
            return forward_slices
        return torch.cat([forward_slices, self.backward_weights[i]], dim=1)

    def forward(self, y: torch.Tensor):
        feats = [y]
        for unit in self.stage1:
            feats.append(unit(concat(feats)))
        xs = feats[1:]
        new: list[torch.Tensor] = []
        for i in range(self.stages):
            h = concat([*new, *xs[i + 1 :]])
            h = self.drop(F.conv2d(torch.relu(self.stage2_norm_in[i](h)), self.stage2_weight(i)))
            h = self.drop(self.stage1[i].conv2(torch.relu(self.stage2_norm_mid[i](h))))
            new.append(h)
        return concat(new), concat([y, *new])
