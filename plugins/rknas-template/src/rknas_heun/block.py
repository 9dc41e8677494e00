"""A Heun-style predictor-corrector RK block (the stage strategy ``heun``, registered in plugin.py).

Heun's method takes an Euler step as a prediction and corrects it with the average slope:
    y_p = y_n + h f(y_n),    y_{n+1} = y_n + h/2 (f(y_n) + f(y_p)).
As in RKCNN, each increment is approximated by a unit of the network (its input carries y_n
and what the increment depends on) instead of by evaluating an ODE function:
    e_1 = unit_1(y_n)                               predictor, ~ h f(y_n)
    d   = (e_1 + unit_2(concat(y_n, e_1))) / 2      corrector, ~ h/2 (f(y_n) + f(y_n + e_1))
    y_{n+1} = y_n + d
With s > 2 stages the corrector is iterated: d = (e_1 + unit_i(concat(y_n, d))) / 2.
"""

from __future__ import annotations

import torch
from torch import nn

from rknas import BlockSpec, PreActUnit, concat


class HeunBlock(nn.Module):
    def __init__(self, channels: int, stages: int, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        k = channels
        self.predictor = PreActUnit(k, k, width, dropout)
        self.correctors = nn.ModuleList(PreActUnit(2 * k, k, width, dropout) for _ in range(stages - 1))

    @classmethod
    def from_spec(cls, spec: BlockSpec) -> HeunBlock:
        """The builder: k, s, width and dropout from the spec (its norm is not used: PreActUnit is BN)."""
        return cls(spec.channels, spec.stages, spec.width, spec.dropout)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        e = self.predictor(y)
        d = e
        for unit in self.correctors:
            d = 0.5 * (e + unit(concat([y, d])))
        return y + d
