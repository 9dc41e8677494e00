"""The plugin: registers ``HeunBlock`` (block.py) as the stage strategy ``heun``.

rknas imports this module (the entry point) whenever it looks up plugins, in every command that
lists strategies, models or data sets; the block module, and torch with it, is imported by the
builder, when a network is built. Keeping torch out of this module keeps those commands quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import rknas
from rknas import BlockSpec, StageStrategy

if TYPE_CHECKING:
    from rknas_heun.block import HeunBlock


def build_heun(spec: BlockSpec) -> HeunBlock:
    """The builder: k, s, width and dropout from the spec (its norm is not used: PreActUnit is BN)."""
    from rknas_heun.block import HeunBlock

    return HeunBlock.from_spec(spec)


HEUN = StageStrategy(
    name="heun",
    description="Heun predictor-corrector: y + (e1 + unit(y, e1))/2; s > 2 iterates the corrector",
    builder=build_heun,  # called as builder(spec) with a rknas.BlockSpec
    min_stages=2,
)


@rknas.hookimpl
def register_stage_strategies(register):
    register(HEUN)
