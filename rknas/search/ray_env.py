"""Ray for a search: start a local Ray on loopback or join a cluster, and size the trials.

Ray is imported lazily: a process that never searches (``rknas best``, ``describe``, the
tests of the pure parts) never pays for it, and the loopback switch is set before import.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from typing import Any, Optional

from rknas.errors import RknasError
from rknas.plugins import MODULES_ENV, PLUGINS_ENV

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray binds to 127.0.0.1 on Linux with this
WORKER_ENV = (PLUGINS_ENV, MODULES_ENV, "PYTHONPATH")  # what workers must share with the driver


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
    else:
        keep_ray_on_loopback()
    import ray

    if ray.is_initialized():
        return
    if address:
        try:
            ray.init(address=address, **common)
        except Exception as exc:  # Ray raises several kinds here; the user needs one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RknasError(f"cannot join the Ray cluster at {address}: {first}") from None
        return
    start_local_ray(**common)


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
