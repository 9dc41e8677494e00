"""What a plugin author needs in their own tests: the contract check and temporary registration.

```python
# plugins/rknas-myformula/tests/conftest.py
import pytest
from rknas.testing import temporary_plugin

@pytest.fixture(autouse=True)
def my_plugin():
    import rknas_myformula.plugin as plugin
    with temporary_plugin(plugin, name="rknas-myformula"):
        yield plugin

# plugins/rknas-myformula/tests/test_myformula_contract.py
from rknas.testing import check_strategy

def test_contract():
    check_strategy("myformula", channels=4, stages=3)              # cifar, BatchNorm
    check_strategy("myformula", channels=4, framework="mnist", norm="group")
```

Registering or unregistering a plugin (here, through the plugin manager, or in any other way)
clears rknas's cached strategy and model look-ups.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Optional, Union

if TYPE_CHECKING:
    from torch import nn

    from rknas.strategies.base import BlockSpec, StageStrategy

__all__ = ["check_strategy", "registered_plugins", "temporary_plugin"]


def check_strategy(strategy: Union[str, StageStrategy], spec: Optional[BlockSpec] = None, **fields: Any) -> nn.Module:
    """Build one block of ``strategy`` and run rknas's contract check on it.

    This is the check every network runs for every block (``rknas.models.network.build_stage``):
    ``stages >= min_stages``; the builder returns an ``nn.Module``; one forward pass on
    ``torch.randn(2, k, 4, 4)`` in eval mode returns the declared shape(s) and dtype; a
    finite gradient flows back to the input.

    Args:
        strategy: A registered strategy's name, or a ``rknas.StageStrategy``.
        spec: The ``rknas.BlockSpec`` to build; by default ``channels=4`` and
            ``stages=max(min_stages, 2)`` in the cifar framework.
        **fields: ``BlockSpec`` fields to set on top of ``spec`` (``channels=8``,
            ``framework="mnist", norm="group"``, ...).

    Returns:
        The checked module.

    Raises:
        ConfigError: ``stages`` is below the strategy's ``min_stages``, or no strategy has that name.
        PluginError: The block breaks the contract; the message names strategy and package.
    """
    from rknas.models.network import build_stage
    from rknas.strategies.base import BlockSpec as Spec
    from rknas.strategies.lookup import get_strategy

    st = get_strategy(strategy) if isinstance(strategy, str) else strategy
    if spec is None:
        spec = Spec(channels=fields.pop("channels", 4), stages=fields.pop("stages", max(st.min_stages, 2)))
    if fields:
        spec = dataclasses.replace(spec, **fields)
    return build_stage(st, spec)


@contextlib.contextmanager
def registered_plugins() -> Iterator[Callable[..., Any]]:
    """Register throwaway plugin objects inside the block; all are unregistered on exit.

    Yields ``register(plugin, name=None)``, which registers with rknas's plugin manager and
    returns the plugin.

    Returns:
        A context manager yielding the ``register`` function.
    """
    from rknas.plugins import get_plugin_manager

    pm = get_plugin_manager()
    added: list[Any] = []

    def register(plugin: Any, name: Optional[str] = None) -> Any:
        pm.register(plugin, name=name)
        added.append(plugin)
        return plugin

    try:
        yield register
    finally:
        for plugin in reversed(added):
            if pm.is_registered(plugin):
                pm.unregister(plugin)


@contextlib.contextmanager
def temporary_plugin(plugin: Any, name: Optional[str] = None) -> Iterator[Any]:
    """Register ``plugin`` for the block unless it is registered already (say, through its entry point).

    Args:
        plugin: The plugin module or object, e.g. ``rknas_myformula.plugin``.
        name: The name to register it under (by default pluggy's: the module's name). A
            module from an installed distribution is reported as that distribution whatever
            the name; anything else is reported by this name and its ``__version__``.

    Returns:
        A context manager yielding ``plugin``; on exit the plugin is unregistered if this
        call registered it.
    """
    from rknas.plugins import get_plugin_manager

    if get_plugin_manager().is_registered(plugin):
        yield plugin
        return
    with registered_plugins() as register:
        yield register(plugin, name=name)
