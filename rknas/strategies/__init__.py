"""Stage strategies: the contract, and the built-in E, I and R."""

from rknas.strategies.base import StageStrategy

__all__ = ["StageStrategy"]
