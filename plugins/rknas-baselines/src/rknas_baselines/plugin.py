"""The rknas plugin: registers the paper's comparison models as stage strategies.

Entry point (pyproject.toml): ``[project.entry-points.rknas] baselines = "rknas_baselines.plugin"``.

The norm layer of the ResNet and ODE blocks is part of the strategy name, because a builder
is not told which framework it is built into: the plain names use BatchNorm (the paper's
CIFAR/SVHN models), the ``_gn`` names GroupNorm(min(32, c), c) (the paper's MNIST models,
as in the Neural-ODE reference code). Both have the same parameter and FLOP counts.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import rknas
from rknas import StageStrategy
from rknas.models.blocks import batch_norm, group_norm
from rknas_baselines import __version__  # noqa: F401  (reported when registered without an entry point)
from rknas_baselines.dense import CliqueBlock, DenseBlock
from rknas_baselines.ode import CLASSIC, ODEBlock, ODEFunc
from rknas_baselines.resnet import PreActBasic, PreActBottleneck, ResidualStack

NORMS = {"": (batch_norm, "BatchNorm"), "_gn": (group_norm, "GroupNorm")}
# Paper tolerance of the Adams-Moulton corrector: 0.5 on MNIST (GroupNorm models), 0.9 on CIFAR/SVHN.
IMPLICIT_TOL = {"": 0.9, "_gn": 0.5}


def _residual(block, norm, k, s, w, d):
    return ResidualStack(block, k, s, norm, w, d)


def _ode(norm, time_dependent, method, tol, k, s, w, d):
    return ODEBlock(ODEFunc(k, norm, time_dependent, w, d), steps=s, method=method, tol=tol)


def _strategies() -> list[StageStrategy]:
    out = []
    for suffix, (norm, norm_name) in NORMS.items():
        out += [
            StageStrategy(
                name=f"preact{suffix}",
                description=f"pre-activation ResNet block ({norm_name}); s blocks in a row, paper: s=1",
                builder=partial(_residual, PreActBasic, norm),
            ),
            StageStrategy(
                name=f"preact_bottleneck{suffix}",
                description=f"pre-activation ResNet bottleneck block 1x1(k/4)-3x3(k/4)-1x1(k) ({norm_name}); paper: s=1",
                builder=partial(_residual, PreActBottleneck, norm),
            ),
            StageStrategy(
                name=f"rknn{suffix}",
                description=f"RKNN: time-invariant ODE function ({norm_name}), classical RK4, s steps per period; paper: s=1",
                builder=partial(_ode, norm, False, CLASSIC, 0.0),
            ),
            StageStrategy(
                name=f"rknet{suffix}",
                description=f"RK-Net: ODE function with a time channel ({norm_name}), classical RK4, s steps; paper: s=1",
                builder=partial(_ode, norm, True, CLASSIC, 0.0),
            ),
            StageStrategy(
                name=f"odenet{suffix}",
                description=f"ODE-Net: explicit Adams-Bashforth, RK 3/8 starter ({norm_name}), s steps; paper counts: s=2",
                builder=partial(_ode, norm, True, "explicit_adams", 0.0),
            ),
            StageStrategy(
                name=f"odenet_implicit{suffix}",
                description=(
                    f"ODE-Net: Adams-Bashforth-Moulton, corrector iterated <=4x, tol {IMPLICIT_TOL[suffix]} "
                    f"({norm_name}), s >= 3 steps"
                ),
                builder=partial(_ode, norm, True, "implicit_adams", IMPLICIT_TOL[suffix]),
                min_stages=3,
            ),
        ]
    out += [
        StageStrategy(
            name="densenet",
            description="DenseNet dense block, T=s layers; passes input + all features on, (s+1)k channels",
            builder=DenseBlock,
            out_channels=lambda k, s: (s + 1) * k,
        ),
        StageStrategy(
            name="cliquenet",
            description="CliqueNet clique block, T=s layers; s*k features to the transition, (s+1)k to the postprocessor",
            builder=CliqueBlock,
            min_stages=2,
            out_channels=lambda k, s: s * k,
            post_channels=lambda k, s: (s + 1) * k,
        ),
    ]
    return out


STRATEGIES = tuple(_strategies())


@rknas.hookimpl
def register_stage_strategies(register):
    for strategy in STRATEGIES:
        register(strategy)


@rknas.hookimpl
def register_search_spaces(register):
    register(Path(__file__).parent / "spaces")
