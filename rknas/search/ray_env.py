"""Ray for a search: start a local Ray on loopback or join a cluster, and size the trials.

Ray is imported lazily: a process that never searches (``rknas best``, ``describe``, the
tests of the pure parts) never pays for it, and the loopback switch is set before import.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from rknas.errors import RknasError
from rknas.plugins import MODULES_ENV, PLUGINS_ENV

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray binds to 127.0.0.1 on Linux with this
WORKER_ENV = (PLUGINS_ENV, MODULES_ENV, "PYTHONPATH")  # what workers must share with the driver
# Ray's token authentication (Ray >= 2.52; `ray start --head` turns it on when a token exists):
# the mode, and where the token is read from, in Ray's order (see ``auth_token_source``).
AUTH_MODE_ENV, TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_FILE = Path(".ray") / "auth_token"  # under the home directory
TOKEN_HELP = (
    "copy the cluster's token (`ray get-auth-token` on its head node) to ~/.ray/auth_token, "
    "or set RAY_AUTH_TOKEN_PATH to a file holding it, or RAY_AUTH_TOKEN to the token itself"
)
# Ray retries a refused GCS connection once a second for 20 s; one try tells whether it refuses.
GCS_WAIT_ENV = "RAY_gcs_server_port_wait_time_s"


def keep_ray_on_loopback() -> None:
    """Make a local Ray bind 127.0.0.1 only.

    Ray reads the switch into a module constant when it is imported: set the variable for the
    processes Ray starts, and the constant in case this process imported Ray already.
    """
    os.environ.update(LOOPBACK_ENV)
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def start_local_ray(num_cpus: Optional[int] = None, **kwargs: Any) -> None:
    """A local Ray on 127.0.0.1 with its files under a temp folder of ours.

    Args:
        num_cpus: CPUs Ray may use (default: all).
        **kwargs: Passed to ``ray.init``.
    """
    keep_ray_on_loopback()
    import ray

    temp = os.path.join(tempfile.gettempdir(), f"rknas-ray-{os.getuid()}")
    ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", _temp_dir=temp, **kwargs)


def start_ray(address: Optional[str] = None) -> None:
    """Join the cluster at ``address``, or start a local Ray on loopback (no-op if running).

    Raises:
        RknasError: The address is malformed, unreachable, or refuses us.
    """
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no experiment banner: rknas draws its own progress
    env_vars = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    common: dict[str, Any] = dict(
        logging_level=logging.ERROR,
        log_to_driver=False,
        include_dashboard=False,
        runtime_env={"env_vars": env_vars} if env_vars else None,
    )
    if address:
        check_reachable(address)
    if not address or is_loopback_address(address):
        keep_ray_on_loopback()
    import ray

    if ray.is_initialized():
        return
    if address:
        join_cluster(address, **common)
        return
    start_local_ray(**common)


def is_loopback_address(address: str) -> bool:
    """Whether an address names this machine's loopback interface.

    Args:
        address: HOST:PORT (IPv4, ``[IPv6]`` or a name; only ``localhost`` is resolved).

    Returns:
        True for 127.0.0.0/8, ::1 and ``localhost``.
    """
    host = address.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auth_token_source() -> tuple[str, bool]:
    """Where Ray reads this process's cluster token from, and whether a token is there.

    Ray 2.60's order: the ``RAY_AUTH_TOKEN`` variable when it is not empty; else the file
    ``RAY_AUTH_TOKEN_PATH`` names when that is set (no fallback when the file is missing);
    else ``~/.ray/auth_token``. Surrounding whitespace is ignored, and a blank token is none.

    Returns:
        ``(where, found)``: the source in words, for messages, and whether it holds a token.
    """
    value = os.environ.get(TOKEN_ENV)
    if value:
        return TOKEN_ENV, bool(value.strip())
    named = os.environ.get(TOKEN_PATH_ENV)
    path = Path(named) if named else Path.home() / DEFAULT_TOKEN_FILE
    where = f"{TOKEN_PATH_ENV} ({path})" if named else str(path)
    try:
        return where, bool(path.read_text().strip())
    except (OSError, UnicodeDecodeError):  # missing or unreadable: Ray finds no token there either
        return where, False


def use_token_auth() -> None:
    """Turn on Ray's token authentication for this process, as ``ray start`` does on a head.

    Ray reads ``RAY_AUTH_MODE`` into its config when ``ray`` is imported; if it was imported
    already, the config is re-read (the way Ray itself enables token mode).
    """
    os.environ[AUTH_MODE_ENV] = "token"
    if "ray._raylet" in sys.modules:
        from ray._raylet import Config  # type: ignore[attr-defined]  # compiled; its .pyi omits Config

        Config.initialize("")


def join_cluster(address: str, **kwargs: Any) -> None:
    """Join the Ray cluster at ``address``, with its token when it asks for one.

    A cluster started by ``ray start --head`` (Ray >= 2.52) refuses clients without its token,
    but a client in token mode breaks actors on a cluster without authentication. So, unless
    ``RAY_AUTH_MODE`` is set: one quick try as is, and on refusal a try in token mode with the
    token Ray finds (``auth_token_source``). A host on loopback joins with node address 127.0.0.1
    (a head started with ``--node-ip-address 127.0.0.1`` is found only so).

    Args:
        address: HOST:PORT of the head node's GCS, or ``auto``.
        **kwargs: Passed to ``ray.init``.

    Raises:
        RknasError: The cluster refuses the token (or there is none), or cannot be joined.
    """
    if address == "auto":
        ok = _init(address, kwargs, quick=False)  # Ray's own rule: token mode when a token exists
    else:
        if is_loopback_address(address):  # else Ray swaps 127.0.0.1 for the machine's network address
            keep_ray_on_loopback()
            kwargs.setdefault("_node_ip_address", "127.0.0.1")
        ok = _init(address, kwargs, quick=True)
        if not ok and not os.environ.get(AUTH_MODE_ENV) and auth_token_source()[1]:
            use_token_auth()
            ok = _init(address, kwargs, quick=True)
    if not ok:
        raise _refusal(address)


def _init(address: str, kwargs: dict[str, Any], quick: bool) -> bool:
    """``ray.init`` on ``address``.

    With ``quick``: one connection try, with Ray's own output hidden; a quick try that fails
    for another reason than authentication is repeated the normal way (Ray retries for 20 s).

    Returns:
        True when joined, False when the cluster refused us for want of the right token.

    Raises:
        RknasError: The cluster cannot be joined for another reason; one line.
    """
    import ray

    try:
        with _quick_connect() if quick else contextlib.nullcontext():
            ray.init(address=address, **kwargs)
        return True
    except Exception as exc:  # Ray raises several kinds here; the user needs one line
        if _is_auth_error(exc):
            return False
        if quick:
            return _init(address, kwargs, quick=False)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RknasError(f"cannot join the Ray cluster at {address}: {first}") from None


def _refusal(address: str) -> RknasError:
    """The one line for a cluster that refused us: what token was used, and how to give one."""
    mode = os.environ.get(AUTH_MODE_ENV, "")
    where, found = auth_token_source()
    if mode and mode.lower() != "token":
        why = f"requires an authentication token, but {AUTH_MODE_ENV}={mode} turns tokens off: unset it, and {TOKEN_HELP}"
    elif not found:
        why = f"requires an authentication token and none was found ({where}): {TOKEN_HELP}"
    else:
        why = f"refused the authentication token from {where}: {TOKEN_HELP}"
    return RknasError(f"the Ray cluster at {address} {why}")


def _is_auth_error(exc: BaseException) -> bool:
    """Whether Ray refused us for the token: an ``AuthenticationError``, raised or quoted in a cause."""
    from ray.exceptions import AuthenticationError

    seen: Optional[BaseException] = exc
    while seen is not None:
        text = str(seen)
        if isinstance(seen, AuthenticationError) or "AuthenticationError" in text or "InvalidAuthToken" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def _quick_connect() -> Iterator[None]:
    """One GCS connection try instead of twenty; what Ray writes to fd 2 is shown only if it joined.

    A refused try makes Ray's C++ client print a warning per attempt; the caller turns the
    refusal into one line of its own.
    """
    set_wait = GCS_WAIT_ENV not in os.environ
    if set_wait:
        os.environ[GCS_WAIT_ENV] = "1"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
            sink.seek(0)  # joined: pass on what Ray said
            os.write(2, sink.read())
    finally:
        os.close(saved)
        if set_wait:
            os.environ.pop(GCS_WAIT_ENV, None)


def check_reachable(address: str) -> None:
    """Ray can wait minutes on a dead address; a plain TCP connect answers in seconds.

    Raises:
        RknasError: ``address`` is not HOST:PORT or nothing listens there.
    """
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RknasError(f"--address {address!r} is not HOST:PORT (the head node's GCS address, e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise RknasError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def check_resources(cpus_per_trial: float, gpus_per_trial: float) -> int:
    """Fail fast where Ray would wait forever.

    Returns:
        How many trials the cluster runs at once with these shares.

    Raises:
        RknasError: The cluster has fewer CPUs or GPUs than one trial asks for.
    """
    import ray

    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0), res.get("GPU", 0)
    if gpus_per_trial > 0 and gpus < gpus_per_trial:
        raise RknasError(
            f"--gpus-per-trial {gpus_per_trial} asked for, but the Ray cluster has {gpus:g} GPUs; use --gpus-per-trial 0"
        )
    if cpus < cpus_per_trial:
        raise RknasError(f"--cpus-per-trial {cpus_per_trial} asked for, but the Ray cluster has {cpus:g} CPUs")
    by_cpu = int(cpus // cpus_per_trial)
    by_gpu = int(gpus // gpus_per_trial) if gpus_per_trial > 0 else by_cpu
    return max(1, min(by_cpu, by_gpu))


def holds_marker(proc: Path, marker: str) -> bool:
    """Whether the environment of process ``proc`` (its ``/proc/PID`` folder) holds ``marker`` (``KEY=VALUE``).

    Raises:
        OSError: The process is gone, or its environment is not ours to read.
    """
    return marker.encode() in (proc / "environ").read_bytes().split(b"\0")


def trial_worker_pids(marker: Optional[str] = None) -> list[int]:
    """Pids of this machine's Ray worker processes running a trial (Ray titles them after the trainable's actor).

    For fault injection (``benchmarks/chaos.py``, the worker-death tests): Linux only.

    Args:
        marker: ``KEY=VALUE`` that the process's environment must hold: only the workers of
            the Ray whose processes carry it (several Rays may run trials on one machine).

    Returns:
        The pids, possibly none.
    """
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0]
            if title.startswith(b"ray::ImplicitFunc") and (marker is None or holds_marker(proc, marker)):
                pids.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return pids
