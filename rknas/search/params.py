"""The names of a space's Optuna parameters, in one place: sampling writes them, warm start reads them back.

A per-period setting of period N is ``pN_<key>`` (``p1_strategy``, ``p2_k``). When a period's
listed stage counts include some its sampled strategy cannot take, the stage count is asked
under its own name, ``pN_stages_min<m>`` (Optuna's categorical choices may not change between
trials under one name); it still sets ``pN_stages``. Renaming a parameter here renames it
everywhere.
"""

from __future__ import annotations

import re
import typing
from typing import Any

# Network settings a space takes from the data or its own top level, never searched per period.
NETWORK_FROM_SPACE = ("framework", "classes", "in_channels", "image_size")
_STAGES_AT_LEAST = re.compile(r"(p\d+_stages)_min\d+")


def period_param(period: int, key: str) -> str:
    """The parameter of ``key`` in period ``period`` (1-based): ``p2_k``."""
    return f"p{period}_{key}"


def stages_at_least(period: int, min_stages: int) -> str:
    """The stage count of a period whose strategy needs at least ``min_stages``: ``p1_stages_min2``."""
    return f"{period_param(period, 'stages')}_min{min_stages}"


def setting_of(name: str) -> str:
    """The setting a parameter sets: ``p1_stages`` for ``p1_stages_min2``, the name itself otherwise."""
    m = _STAGES_AT_LEAST.fullmatch(name)
    return m.group(1) if m else name


def is_stages_at_least(name: str) -> bool:
    """Whether ``name`` is a ``pN_stages_min<m>`` parameter."""
    return _STAGES_AT_LEAST.fullmatch(name) is not None


def is_list(annotation: Any) -> bool:
    """Whether a config field's annotation is a list (one value per period)."""
    return typing.get_origin(annotation) is list


def per_period_fields(network_cls: Any) -> list[str]:
    """The list fields of a network config class: one value per period."""
    return [n for n, f in network_cls.model_fields.items() if is_list(f.annotation)]


__all__ = ["NETWORK_FROM_SPACE", "is_list", "is_stages_at_least", "per_period_fields", "period_param", "setting_of",
           "stages_at_least"]
