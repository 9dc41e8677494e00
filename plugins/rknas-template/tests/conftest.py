"""Register this plugin for every test here, and nothing else that happens to be installed.

rknas loads installed plugins through their entry points unless ``RKNAS_PLUGINS`` says
otherwise; the repository's own ``tests/conftest.py`` sets it to "" (no entry-point plugins).
Tests register the plugin module directly instead (``rknas.testing.temporary_plugin``), so
they work installed or not; a module of an installed distribution is reported as that
distribution (package and version).
"""

import os

import pytest

os.environ.setdefault("RKNAS_PLUGINS", "")


@pytest.fixture(autouse=True)
def heun_plugin():
    import rknas_heun.plugin as plugin
    from rknas.testing import temporary_plugin

    with temporary_plugin(plugin, name="rknas-template"):  # left alone if its entry point loaded it
        yield plugin
