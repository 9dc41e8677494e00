"""Stage strategies: the contract, and the built-in E, I and R."""

from rknas.strategies.base import BlockSpec, StageStrategy

__all__ = ["BlockSpec", "StageStrategy"]
