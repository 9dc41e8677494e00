"""ODE-solver baselines: RKNN, RK-Net and ODE-Net, integrated over one period.

The ODE function f(t, y) is norm-ReLU-conv3x3-norm-ReLU-conv3x3-norm with biased convs (the
structure of the Neural-ODE reference model). RK-Net and ODE-Net are time dependent: a constant
channel holding t is concatenated in front of each conv's input, so the convs take k+1 channels.
RKNN ignores t (time invariant). One period is the time interval [0, 1], split into ``steps``
equal steps; the step size is absorbed into the learned weights, as in the paper.

Solvers:
- ``rk4_classic``: the classical 4th-order Runge-Kutta method (weights 1/6, 1/3, 1/3, 1/6).
  torchdiffeq has no public classical RK4 (its ``rk4`` is Kutta's 3/8 rule), so this one is
  the short loop in :func:`classic_rk4`.
- any torchdiffeq fixed-grid method: ``rk4`` (3/8 rule), ``explicit_adams`` (Adams-Bashforth,
  RK 3/8-rule starter for the first two steps, order 3 at step 3, order 4 from step 4),
  ``implicit_adams`` (the same predictor with an Adams-Moulton corrector iterated up to
  ``max_iters`` times until the change is within ``tol``), ``euler``, ``midpoint``, ...
  They run through ``torchdiffeq.odeint`` on the explicit grid ``linspace(0, 1, steps + 1)``
  (the same grid as ``options={"step_size": 1 / steps}``, without its float rounding).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from rknas_baselines.resnet import hidden_width

Norm = Callable[[int], nn.Module]
CLASSIC = "rk4_classic"


class ODEFunc(nn.Module):
    """f(t, y) = norm(conv(ReLU(norm(conv(ReLU(norm(y))))))); ``nfe`` counts evaluations."""

    def __init__(self, channels: int, norm: Norm, time_dependent: bool, width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        m = hidden_width(channels, width)
        extra = 1 if time_dependent else 0
        self.time_dependent = time_dependent
        self.norm1 = norm(channels)
        self.conv1 = nn.Conv2d(channels + extra, m, 3, padding=1, bias=True)
        self.norm2 = norm(m)
        self.conv2 = nn.Conv2d(m + extra, channels, 3, padding=1, bias=True)
        self.norm3 = norm(channels)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.nfe = 0

    def _conv(self, conv: nn.Conv2d, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.time_dependent:
            x = torch.cat([torch.ones_like(x[:, :1]) * t, x], dim=1)
        return self.drop(conv(x))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        out = self._conv(self.conv1, t, torch.relu(self.norm1(y)))
        out = self._conv(self.conv2, t, torch.relu(self.norm2(out)))
        return self.norm3(out)


def classic_rk4(func: Callable, y: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """The classical RK4 method over the time points of ``grid``; returns the final state."""
    for t0, t1 in zip(grid[:-1], grid[1:]):
        h = t1 - t0
        k1 = func(t0, y)
        k2 = func(t0 + h / 2, y + h / 2 * k1)
        k3 = func(t0 + h / 2, y + h / 2 * k2)
        k4 = func(t1, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


class ODEBlock(nn.Module):
    """y(1) from y(0) = y_n by ``method`` with ``steps`` equal steps over [0, 1]."""

    def __init__(self, func: ODEFunc, steps: int = 1, method: str = CLASSIC, tol: float = 0.5, max_iters: int = 4):
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.func, self.steps, self.method = func, int(steps), method
        self.tol, self.max_iters = float(tol), int(max_iters)

    @property
    def nfe(self) -> int:
        """Function evaluations of the last forward pass."""
        return self.func.nfe

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        self.func.nfe = 0
        grid = torch.linspace(0.0, 1.0, self.steps + 1, dtype=y.dtype, device=y.device)
        if self.method == CLASSIC:
            return classic_rk4(self.func, y, grid)
        from torchdiffeq import odeint  # here, not at the top: loading the plugin (every command) skips its 0.5 s import

        options = {"max_iters": self.max_iters} if self.method == "implicit_adams" else None
        return odeint(self.func, y, grid, method=self.method, options=options, rtol=self.tol, atol=self.tol)[-1]

    def extra_repr(self) -> str:
        return f"method={self.method!r}, steps={self.steps}" + (f", tol={self.tol}" if "implicit" in self.method else "")
