import os
import sys
import tempfile
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
# Training in the tests uses one thread: their networks are tiny, and two threads on a machine that
# is busy with anything else (the suite's own Ray workers included) ran an epoch 6-12x slower
# (OpenMP threads waiting on each other). Tests of the default unset it.
os.environ.setdefault("RKNAS_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch's own default, for tests that call fit() directly
# The file the `search_gate` test strategy waits for, set before the shared Ray starts so that
# its workers see it too (see the `gate` fixture). One per test process, always: pytest-xdist's
# workers inherit the controller's environment, and a gate they shared would let one worker's
# test open or clean up another's.
os.environ["RKNAS_TEST_GATE"] = os.path.join(tempfile.gettempdir(), f"rknas-test-gate-{os.getpid()}")


# The fast loop (`make test-fast`, `pytest -m "not slow"`) leaves out every test that needs a
# shared service, whether or not its author remembered the marker.
SERVICES = ("ray_local", "postgres_server")


FAST = os.environ.get("RKNAS_TEST_FAST") == "1"  # set by `make test-fast`: Ray must not be imported


def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(f in item.fixturenames for f in SERVICES) or params.get("any_storage") == "postgresql":
            item.add_marker(pytest.mark.slow)
    if FAST and "ray" in sys.modules:
        raise pytest.UsageError("a test module imports Ray at collection: import it inside the (slow) tests that need it")
    if hasattr(config, "workerinput"):  # a pytest-xdist worker
        # Several test processes (`make test`, pytest-xdist): the slow tests first, each module's
        # in its own order, so that the many short ones fill the processes at the end instead of
        # one long test running alone while the others wait.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _no_ray_in_the_fast_loop(request):
    """In the fast loop, a test that imports Ray fails and says to mark it slow."""
    had = "ray" in sys.modules
    yield
    if FAST and not had and "ray" in sys.modules:
        pytest.fail("this test imported Ray: mark it @pytest.mark.slow (the fast loop runs without Ray)")


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


@pytest.fixture
def register_plugin():
    """Register throwaway plugin objects for one test and unregister them afterwards."""
    from plugin_testing import registered_plugins  # tests/support is on sys.path (above)

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


@pytest.fixture(scope="session")
def ray_address(ray_local):
    """HOST:PORT of the shared Ray, for `rknas search --address` in a subprocess: a driver joining a
    running cluster, as on a real one, without starting (and paying for) a Ray of its own."""
    address = ray_local.get_runtime_context().gcs_address
    assert address.startswith("127.0.0.1:"), address
    return address


@pytest.fixture
def gate():
    """The (closed) gate of the `search_gate` strategy in the shared Ray: ``gate.touch()`` opens it."""
    path = Path(os.environ["RKNAS_TEST_GATE"])
    marks = [path.with_name(path.name + suffix) for suffix in (".waiting", ".evaluated")]
    for p in (path, *marks):
        p.unlink(missing_ok=True)
    yield path
    for p in (path, *marks):
        p.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL server on 127.0.0.1 for the whole session (tests/support/rknas_pgserver.py).

    Never skipped: without Debian's server binaries the tests that use it fail and say what to install.
    """
    from rknas_pgserver import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_storage(request, tmp_path):
    """A fresh, empty storage URL: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s.db"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture(scope="session")
def bench_space():
    """The shipped bench space, with Fashion-MNIST's shape (no data loaded)."""
    from rknas.search.space import load_space

    space = load_space("fashion_mnist_bench")
    space.in_channels, space.image_size, space.classes = 1, 28, 10
    return space


@pytest.fixture(scope="session")
def synthetic_table(tmp_path_factory, bench_space):
    """(path, {arch: true mean test accuracy}): a table of made-up curves for ``bench_space``
    (tests/support/synthetic_bench.py), 60 architectures x 2 seeds x 4 epochs, whose last one failed."""
    from synthetic_bench import make_table

    path = tmp_path_factory.mktemp("bench") / "t.db"
    return path, make_table(path, bench_space, archs=60, seeds=2, epochs=4, fail=(59,))
