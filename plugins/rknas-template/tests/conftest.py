"""Register this plugin for every test here, and nothing else that happens to be installed.

rknas loads installed plugins through their entry points unless ``RKNAS_PLUGINS`` says
otherwise; the repository's own ``tests/conftest.py`` sets it to "" (no entry-point plugins).
Tests register the plugin module directly instead, so they work installed or not.
"""

import os

import pytest

os.environ.setdefault("RKNAS_PLUGINS", "")


@pytest.fixture(autouse=True)
def heun_plugin():
    import rknas_heun.plugin as plugin
    from rknas.plugins import get_plugin_manager

    pm = get_plugin_manager()
    added = not pm.is_registered(plugin)  # already there if this session loaded entry points
    if added:
        pm.register(plugin, name="rknas-template")
    yield plugin
    if added:
        pm.unregister(plugin)
