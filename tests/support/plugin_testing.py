"""Helpers for tests that register throwaway plugins (importable from any test directory)."""

import contextlib


@contextlib.contextmanager
def registered_plugins():
    """Register throwaway plugin objects inside the block; all are unregistered on exit."""
    from rknas.plugins import get_plugin_manager

    pm = get_plugin_manager()
    added = []

    def register(plugin, name=None):
        pm.register(plugin, name=name)
        added.append(plugin)
        return plugin

    try:
        yield register
    finally:
        for plugin in added:
            if pm.is_registered(plugin):
                pm.unregister(plugin)
