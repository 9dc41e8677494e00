"""Params and FLOPs of the built-in named models, counted once and shipped (``paper_sizes.json``).

Counting a network means building it with torch; listing the paper's models (``rknas models``)
should not. The table holds, per built-in model, its validated config and its counts; a model
whose config (or whose strategies' package) differs from the table is counted as before.
``tests/test_counts.py`` checks the table against counting, and
``python -m rknas.models.sizes`` rewrites it after a change to a model or a strategy.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Optional

from rknas.config import NetworkConfig

TABLE = Path(__file__).with_name("paper_sizes.json")


@functools.cache
def shipped() -> dict[str, dict[str, Any]]:
    """The shipped table: model name -> ``{"config": ..., "params": ..., "flops": ...}`` (empty if missing)."""
    try:
        return dict(json.loads(TABLE.read_text()))
    except (OSError, ValueError):
        return {}


def shipped_counts(name: str, config: NetworkConfig, package: str) -> Optional[tuple[int, int]]:
    """``(params, flops)`` of a built-in model from the table, when it still describes this config.

    Args:
        name: The model's name.
        config: Its validated config.
        package: Who registered it (only rknas's own models are in the table).

    Returns:
        The counts, or None: count the network instead.
    """
    row = shipped().get(name)
    if package != "rknas" or row is None or row.get("config") != config.model_dump(mode="json"):
        return None
    from rknas.strategies.lookup import strategies

    known = strategies()
    if any(s not in known or known[s].package != "rknas" for s in config.strategy):
        return None  # a plugin replaced a built-in strategy: its counts are its own
    return int(row["params"]), int(row["flops"])


def count_all() -> dict[str, dict[str, Any]]:
    """Count every built-in named model (builds each network: torch)."""
    from rknas.models.counting import count_network
    from rknas.models.named import models

    out = {}
    for name, model in sorted(models().items()):
        if model.package != "rknas":
            continue
        config = NetworkConfig.model_validate(dict(model.config))
        params, flops = count_network(config)
        out[name] = {"config": config.model_dump(mode="json"), "params": params, "flops": flops}
    return out


if __name__ == "__main__":
    TABLE.write_text(json.dumps(count_all(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE}")
