"""The hooks a plugin may implement.

Every hook takes a ``register`` callable: a plugin calls it once per thing it provides.
Registering through a callback (rather than returning a list) lets rknas attribute each
item to the plugin that registered it, so duplicates and broken plugins are reported by
package name and version.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("rknas")


@hookspec
def register_stage_strategies(register):
    """Register stage strategies: call ``register(StageStrategy(...))`` once per strategy.

    A stage strategy approximates one Runge-Kutta time step: its builder returns a module
    mapping y_n of shape (N, k, H, W) to y_{n+1}. Names must be unique across all plugins.
    """


@hookspec
def register_search_spaces(register):
    """Register search spaces: call ``register(path)`` with a YAML file or a directory of them.

    Each file's stem becomes the space name usable as ``rknas search --space NAME``.
    """


@hookspec
def register_datasets(register):
    """Register data sets: call ``register(name, loader)``.

    ``loader(root, **options)`` returns a ``rknas.data.TensorData`` pair
    ``(train, test)`` of in-memory tensors; see ``rknas.data`` for the fields.
    """
