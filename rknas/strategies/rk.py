"""The paper's three RK blocks, registered through the same hook third-party plugins use."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from rknas.hookspecs import hookimpl
from rknas.strategies.base import BlockSpec, StageStrategy

if TYPE_CHECKING:
    from rknas.models.blocks import RKBlock


def _builder(mode: str, spec: BlockSpec) -> RKBlock:
    # The paper's RK blocks use BatchNorm in both frameworks, so spec.norm is not read.
    # torch is imported here, when a network is built: registering and listing need none.
    from rknas.models.blocks import RKBlock

    return RKBlock(spec.channels, spec.stages, mode=mode, width=spec.width, dropout=spec.dropout)


BUILTIN = (
    StageStrategy(
        name="E",
        description="RKCNN-E: dense Phase I only, e_i = x_i (explicit RK, Eq 17)",
        builder=partial(_builder, "E"),
        min_stages=1,
    ),
    StageStrategy(
        name="I",
        description="RKCNN-I: Phase II alternate update with replacement (implicit RK, Eq 28)",
        builder=partial(_builder, "I"),
        min_stages=2,
    ),
    StageStrategy(
        name="R",
        description="RKCNN-R: Phase II alternate update without replacement (Eq 27)",
        builder=partial(_builder, "R"),
        min_stages=2,
    ),
)


@hookimpl
def register_stage_strategies(register):
    for strategy in BUILTIN:
        register(strategy)
