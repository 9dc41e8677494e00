"""The rknas plugin: registers the paper's comparison models as stage strategies.

Entry point (pyproject.toml): ``[project.entry-points.rknas] baselines = "rknas_baselines.plugin"``.

The norm layer of the ResNet and ODE blocks comes from the ``rknas.BlockSpec`` a builder is
called with: BatchNorm in the ``cifar`` framework (the paper's CIFAR/SVHN models), GroupNorm
(min(32, c), c) in the ``mnist`` framework (the paper's MNIST models, as in the Neural-ODE
reference code). Both have the same parameter and FLOP counts. The ``_gn`` names of earlier
releases, which forced GroupNorm whatever the framework, remain as deprecated aliases.
"""

from __future__ import annotations

import dataclasses
import warnings
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import rknas
from rknas import BlockSpec, StageStrategy

if TYPE_CHECKING:
    from torch import nn

# The block modules (and torch) are imported by the builders, when a network is built: loading
# this plugin, as every rknas command that lists or looks up plugins does, costs no torch import.
CLASSIC = "rk4_classic"  # rknas_baselines.ode.CLASSIC (a test pins that they agree)

# Paper tolerance of the Adams-Moulton corrector: 0.5 on MNIST (GroupNorm models), 0.9 on CIFAR/SVHN.
IMPLICIT_TOL = {"batch": 0.9, "group": 0.5}


def _residual(block: str, spec: BlockSpec) -> nn.Module:
    from rknas_baselines import resnet

    return resnet.ResidualStack(getattr(resnet, block), spec.channels, spec.stages, spec.norm_layer, spec.width,
                                spec.dropout)


def _ode(time_dependent: bool, method: str, spec: BlockSpec) -> nn.Module:
    from rknas_baselines.ode import ODEBlock, ODEFunc

    tol = IMPLICIT_TOL[spec.norm] if method == "implicit_adams" else 0.0
    func = ODEFunc(spec.channels, spec.norm_layer, time_dependent, spec.width, spec.dropout)
    return ODEBlock(func, steps=spec.stages, method=method, tol=tol)


def _dense(spec: BlockSpec) -> nn.Module:
    from rknas_baselines.dense import DenseBlock

    return DenseBlock(spec.channels, spec.stages, spec.width, spec.dropout)  # BatchNorm, like the RK blocks


def _clique(spec: BlockSpec) -> nn.Module:
    from rknas_baselines.dense import CliqueBlock

    return CliqueBlock(spec.channels, spec.stages, spec.width, spec.dropout)


def _group_norm_alias(name: str, target: StageStrategy, spec: BlockSpec) -> nn.Module:
    warnings.warn(
        f"stage strategy {name!r} is deprecated: use {target.name!r}, which takes GroupNorm in the mnist "
        "framework (BlockSpec.norm)",
        DeprecationWarning,
        stacklevel=2,
    )
    return target.build(dataclasses.replace(spec, norm="group"))


def _strategies() -> list[StageStrategy]:
    norm = "norm from the framework: BatchNorm (cifar), GroupNorm (mnist)"
    main = [
        StageStrategy(
            name="preact",
            description=f"pre-activation ResNet block ({norm}); s blocks in a row, paper: s=1",
            builder=partial(_residual, "PreActBasic"),
        ),
        StageStrategy(
            name="preact_bottleneck",
            description=f"pre-activation ResNet bottleneck block 1x1(k/4)-3x3(k/4)-1x1(k) ({norm}); paper: s=1",
            builder=partial(_residual, "PreActBottleneck"),
        ),
        StageStrategy(
            name="rknn",
            description=f"RKNN: time-invariant ODE function ({norm}), classical RK4, s steps per period; paper: s=1",
            builder=partial(_ode, False, CLASSIC),
        ),
        StageStrategy(
            name="rknet",
            description=f"RK-Net: ODE function with a time channel ({norm}), classical RK4, s steps; paper: s=1",
            builder=partial(_ode, True, CLASSIC),
        ),
        StageStrategy(
            name="odenet",
            description=f"ODE-Net: explicit Adams-Bashforth, RK 3/8 starter ({norm}), s steps; paper counts: s=2",
            builder=partial(_ode, True, "explicit_adams"),
        ),
        StageStrategy(
            name="odenet_implicit",
            description=(
                f"ODE-Net: Adams-Bashforth-Moulton, corrector iterated <=4x, tol 0.9 with BatchNorm, 0.5 with "
                f"GroupNorm ({norm}), s >= 3 steps"
            ),
            builder=partial(_ode, True, "implicit_adams"),
            min_stages=3,
        ),
    ]
    aliases = [
        dataclasses.replace(
            st,
            name=f"{st.name}_gn",
            description=f"deprecated: {st.name} with GroupNorm in any framework; use {st.name} (GroupNorm in mnist)",
            builder=partial(_group_norm_alias, f"{st.name}_gn", st),
        )
        for st in main
    ]
    dense = [
        StageStrategy(
            name="densenet",
            description="DenseNet dense block, T=s layers; passes input + all features on, (s+1)k channels",
            builder=_dense,
            out_channels=lambda k, s: (s + 1) * k,
        ),
        StageStrategy(
            name="cliquenet",
            description="CliqueNet clique block, T=s layers; s*k features to the transition, (s+1)k to the postprocessor",
            builder=_clique,
            min_stages=2,
            out_channels=lambda k, s: s * k,
            post_channels=lambda k, s: (s + 1) * k,
        ),
    ]
    return main + aliases + dense


STRATEGIES = tuple(_strategies())


@rknas.hookimpl
def register_stage_strategies(register):
    for strategy in STRATEGIES:
        register(strategy)


@rknas.hookimpl
def register_search_spaces(register):
    register(Path(__file__).parent / "spaces")
