"""Ray clusters the tests start with `ray start`, as a user would: helpers shared by their tests.

Every process of a test cluster carries a marker variable in its environment, so the test
stops exactly its own processes (never `ray stop`, which stops every Ray of the user).
"""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rknas.search.ray_env import holds_marker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no RAY_* variable (the test process has some)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), **extra}


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment holds ``marker``: a node's, and the workers it started."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if holds_marker(proc, marker):
                    pids.append(int(proc.name))
            except OSError:  # gone, or not ours
                continue
    return pids


def signal_all(proc: subprocess.Popen, marker: str, sig: int) -> None:
    """``sig`` to the process group of ``proc`` and to every process carrying ``marker``."""
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(proc.pid, sig)
    for pid in marked_pids(marker):
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(pid, sig)


def stop(procs: list[subprocess.Popen], marker: str) -> None:
    """SIGTERM to the cluster's processes, SIGKILL to those left after 2 s (nothing of a test cluster needs keeping)."""
    for proc in procs:
        signal_all(proc, marker, signal.SIGTERM)
    deadline = time.monotonic() + 2
    while marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    for proc in procs:
        signal_all(proc, marker, signal.SIGKILL)
        proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while (left := marked_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of the test cluster survived SIGKILL: {left}"


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> str:
    """Wait until ``text`` is in ``log`` (the log's text); fail with the log if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while text not in (content := log.read_text()):
        assert proc.poll() is None, content
        assert time.monotonic() < deadline, content
        time.sleep(0.5)
    return content


RAY = Path(sys.executable).with_name("ray")
START_TIMEOUT = 180  # generous: only a head that never comes up waits this long


@contextlib.contextmanager
def head_node(tmp: Path, num_cpus: int, env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """A Ray head on 127.0.0.1 started with `ray start --head` in ``env``; yields its address and
    temp dir, then stops it.

    Its workers get ``env`` (not the environment of the drivers that join it), as on a real cluster.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="rkc"))  # short: Ray's socket paths live under it
    marker = f"RKNAS_TEST_CLUSTER={secrets.token_hex(8)}"
    port = free_port()
    env = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env.update([marker.split("=", 1)])
    log_path = tmp / "head.log"
    with log_path.open("w") as log:
        head = subprocess.Popen(
            [str(RAY), "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
             "--temp-dir", str(temp_dir), "--num-cpus", str(num_cpus), "--object-store-memory", str(200 * 1024**2),
             "--include-dashboard", "false", "--dashboard-port", str(free_port()),
             "--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp,
        )
        try:
            wait_for(log_path, "Ray runtime started", head, START_TIMEOUT)
            yield f"127.0.0.1:{port}", temp_dir
        finally:
            stop([head], marker)
            shutil.rmtree(temp_dir, ignore_errors=True)
