import contextlib
import os
import sys
from pathlib import Path

import pytest

# Before anything imports Ray: every Ray server the tests start listens on 127.0.0.1 only.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

# Tests see only the built-in plugins (and the test-only plugin module) unless a test opts in,
# so an installed third-party plugin cannot change what the core tests measure.
os.environ.setdefault("RKNAS_PLUGINS", "")
SUPPORT = str(Path(__file__).parent / "support")
sys.path.insert(0, SUPPORT)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SUPPORT, os.environ.get("PYTHONPATH")]))
os.environ["RKNAS_PLUGIN_MODULES"] = "rknas_testplugins"


@pytest.fixture
def cli(capsys):
    """Run the rknas CLI in-process: returns (exit code, stdout, stderr)."""
    from rknas.cli import main

    def run(*args):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out = capsys.readouterr()
        return exc.value.code, out.out, out.err

    return run


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


@pytest.fixture
def register_plugin():
    """Register throwaway plugin objects for one test and unregister them afterwards."""
    with registered_plugins() as register:
        yield register


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """One local Ray for every test that needs it, bound to 127.0.0.1."""
    import logging

    import ray

    from rknas.search.ray_env import start_local_ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    start_local_ray(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    yield ray
    ray.shutdown()
