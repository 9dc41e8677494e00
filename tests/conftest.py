import os

import pytest

# Tests see only the built-in plugins unless a test opts in, so an installed third-party
# plugin cannot change what the core tests measure.
os.environ.setdefault("RKNAS_PLUGINS", "")


@pytest.fixture
def register_plugin():
    """Register throwaway plugin objects for one test and unregister them afterwards."""
    from rknas.plugins import get_plugin_manager

    pm = get_plugin_manager()
    added = []

    def register(plugin, name=None):
        pm.register(plugin, name=name)
        added.append(plugin)
        return plugin

    yield register
    for plugin in added:
        pm.unregister(plugin)
