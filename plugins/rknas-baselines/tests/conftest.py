"""Make the baselines visible to rknas in every test here, hermetically.

Run from the repository root, ``tests/conftest.py`` has already set ``RKNAS_PLUGINS=""`` (no
entry-point plugins load); run on its own, this file does the same. Either way the plugin
module is registered directly, under its distribution name, and removed after each test; if
a session did load it through its entry point, that registration is used as it is.
"""

import os

import pytest

os.environ.setdefault("RKNAS_PLUGINS", "")


@pytest.fixture(autouse=True)
def baselines_plugin():
    import rknas_baselines.plugin as plugin
    from rknas.testing import temporary_plugin

    with temporary_plugin(plugin, name="rknas-baselines"):
        yield plugin
