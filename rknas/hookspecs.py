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

    from rknas.data.source import DataSource
    from rknas.search.samplers import SamplerSpec
    from rknas.strategies.base import StageStrategy

PROJECT = "rknas"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_stage_strategies(register: Callable[[StageStrategy], None]) -> None:
    """Register stage strategies: call ``register(StageStrategy(...))`` once per strategy.

    A stage strategy approximates one Runge-Kutta time step: its builder, called as
    ``builder(spec)`` with a ``rknas.BlockSpec``, returns a module mapping y_n of shape
    (N, k, H, W) to y_{n+1}. Names must be unique across all plugins.

    Args:
        register: Called with one ``rknas.StageStrategy`` per strategy the plugin provides.
    """


@hookspec
def register_models(register: Callable[..., None]) -> None:
    """Register named models: call ``register(config)`` or ``register(config, name)`` once per model.

    ``config`` is a mapping of ``rknas.NetworkConfig`` fields; without ``name`` the model is
    named timm-style from its config (``rkcnn_i_5_5_6_k150_120_120``). Named models are
    listed by ``rknas models`` and built by ``rknas.create_model(name)``; names must be
    unique across all plugins. The paper's RKCNNs are registered through this hook by the
    built-in plugin ``rknas.models.paper``.

    Args:
        register: Called with a config mapping and, optionally, the model's name.
    """


@hookspec
def register_search_spaces(register: Callable[[str | Path], None]) -> None:
    """Register search spaces: call ``register(path)`` with a YAML file or a directory of them.

    Each file's stem becomes the space name usable as ``rknas search --space NAME``.

    Args:
        register: Called with a path to a ``.yaml`` file or to a directory of them.
    """


@hookspec
def register_datasets(register: Callable[[DataSource], None]) -> None:
    """Register data sets: call ``register(DataSource(...))`` once per data set.

    A ``rknas.data.DataSource`` (``rknas/data/source.py``) is the same type the built-in sets
    are: ``name``, ``load`` (``load(root, **options)`` returns a ``(train, test)`` pair of
    ``rknas.data.TensorData`` held in memory; ``options`` come from the ``data.options``
    mapping of a search space) and, optionally, a ``label``, ``where(root)`` and
    ``present(root)`` for ``rknas data list`` and the missing-data errors, and a
    ``fetch(root)`` that downloads the files: then ``rknas data download NAME`` and
    ``--download`` fetch the set like a built-in one. Names must be unique across all plugins.
    The old form ``register(name, loader)`` still works, with a ``DeprecationWarning``.

    Args:
        register: Called with one ``rknas.data.DataSource`` per data set the plugin provides.
    """


@hookspec
def register_samplers(register: Callable[[SamplerSpec], None]) -> None:
    """Register search samplers: call ``register(SamplerSpec(name, make, ...))`` once per sampler.

    ``make(seed, objectives)`` returns a fresh ``optuna.samplers.BaseSampler``. A registered
    sampler is used by a search space's ``sampler: NAME`` and replayed against a benchmark
    table by ``rknas bench replay --strategy NAME`` (``NAME+asha``, ``NAME+asha+warm``), so
    it is judged against random search before anyone spends a GPU budget on it. Names must be
    unique across all plugins.

    Args:
        register: Called with one ``rknas.search.samplers.SamplerSpec`` per sampler.
    """
