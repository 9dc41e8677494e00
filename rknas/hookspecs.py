"""The hooks a plugin may implement, and the two pluggy markers.

Every hook takes a ``register`` callable that the plugin calls once per thing it provides.
Registering through a callback (rather than returning a list) lets rknas attribute each
item to the plugin that registered it, so duplicates and broken plugins are reported by
package name and version.

The markers live here, beside the specs, so that a plugin module (built-in or third-party)
imports them without importing the rest of rknas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from rknas.data.core import TensorData
    from rknas.strategies.base import StageStrategy

PROJECT = "rknas"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_stage_strategies(register: Callable[[StageStrategy], None]) -> None:
    """Register stage strategies: call ``register(StageStrategy(...))`` once per strategy.

    A stage strategy approximates one Runge-Kutta time step: its builder returns a module
    mapping y_n of shape (N, k, H, W) to y_{n+1}. Names must be unique across all plugins.

    Args:
        register: Called with one ``rknas.StageStrategy`` per strategy the plugin provides.
    """


@hookspec
def register_search_spaces(register: Callable[[str | Path], None]) -> None:
    """Register search spaces: call ``register(path)`` with a YAML file or a directory of them.

    Each file's stem becomes the space name usable as ``rknas search --space NAME``.

    Args:
        register: Called with a path to a ``.yaml`` file or to a directory of them.
    """


@hookspec
def register_datasets(
    register: Callable[[str, Callable[..., tuple[TensorData, TensorData]]], None],
) -> None:
    """Register data sets: call ``register(name, loader)`` once per data set.

    ``loader(root, **options)`` returns a ``(train, test)`` pair of ``rknas.data.TensorData``
    held in memory; ``options`` come from the ``data.options`` mapping of a search space.

    Args:
        register: Called with the data set's name and its loader function.
    """
