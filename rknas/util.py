"""Small helpers with one definition each: atomic files, differences of nested settings, the default device."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

from rknas.errors import ConfigError

UNSET = "(unset)"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write a file through a temporary sibling and a rename, so it is never seen half-written.

    Args:
        path: The file to write.
        write: Writes the content to the path it is given (the temporary file).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError:
        raise
    except Exception as exc:
        # torch.save reports a full disk as a RuntimeError ("file write failed"): say what it is.
        if _nearly_full(path.parent):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


NEARLY_FULL_BYTES = 64 * 2**20


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` atomically (see ``atomic_write``).

    Args:
        path: The file to write.
        obj: Anything ``json.dumps`` takes.
    """
    text = json.dumps(obj, indent=2)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``.

    Args:
        value: A mapping (or any value, which becomes ``{prefix: value}``).
        prefix: The key prefix.

    Returns:
        The flat mapping; lists and other values are leaves.
    """
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What changed between two (nested) settings.

    Args:
        before: The old settings.
        after: The new ones.

    Returns:
        ``{dotted key: (before, after)}`` for every leaf that differs, in key order; a missing
        key reads ``UNSET``.
    """
    a, b = flatten(before), flatten(after)
    return {k: (a.get(k, UNSET), b.get(k, UNSET)) for k in sorted(set(a) | set(b)) if a.get(k, UNSET) != b.get(k, UNSET)}


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def cpus_here() -> int:
    """The CPUs this process may run on (its affinity mask, as ``taskset`` or a container sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


THREADS_ENV = "RKNAS_THREADS"


def training_threads(asked: Optional[int] = None) -> int:
    """The threads a training run uses: ``--threads``, else ``RKNAS_THREADS``, else one per CPU
    this process may use.

    Raises:
        ConfigError: ``RKNAS_THREADS`` is set to anything but a whole number of at least 1.
    """
    if asked:
        return asked
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not (env.isascii() and env.isdigit()) or int(env) < 1:  # '²'.isdigit() is True, int('²') fails
            raise ConfigError(f"{THREADS_ENV} must be a whole number of threads, at least 1, got {env!r}; "
                              f"unset it to use one per CPU")
        return int(env)
    return cpus_here()


def busy_hint(threads: int) -> Optional[str]:
    """A one-line hint when the machine already looks busy enough that ``threads`` would oversubscribe it.

    Deterministic defaults matter more than guessing (the thread count changes a CPU run's sums),
    so the count is never lowered silently: the user is told and decides.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available here
        return None
    cpus = cpus_here()
    free = max(1, int(cpus - load + 0.5))
    if threads <= free:
        return None
    return (f"note: the machine is busy (load {load:.1f} on {cpus} CPUs) and training uses {threads} threads; "
            f"--threads {free} may be much faster")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def default_device() -> str:
    """CUDA when a GPU is visible, else the CPU: where work goes when no device is given."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")  # the accelerators rknas trains on (torch's names)


def devices_here() -> list[str]:
    """The devices this machine's torch can train on: ``cpu``, then ``cuda:0``... , ``mps``, ``xpu:0``..."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found += [f"xpu:{i}" for i in range(xpu.device_count())]
    return found


def usable_device(device: Optional[str], flag: str = "--device") -> str:
    """The device to train on, checked before anything is created.

    Args:
        device: What the user asked for (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...), or None
            for ``default_device()``.
        flag: The option's name, for the message.

    Returns:
        The device, as given (or the default).

    Raises:
        ConfigError: An unknown device type, or one this machine does not have, in one line
            naming the types rknas knows and the devices here.
    """
    if device is None:
        return default_device()
    kind, colon, index = device.strip().lower().partition(":")
    if kind not in DEVICE_TYPES or (colon and not index.isdigit()) or (kind in ("cpu", "mps") and colon):
        raise ConfigError(f"{flag} {device!r} is not a device rknas can train on: use cpu, cuda, cuda:N, mps or xpu:N "
                          f"(this machine has {', '.join(devices_here())})")
    if kind == "cpu":
        return device  # every machine has one: no torch import to say so
    here = devices_here()
    wanted = f"{kind}:{index or 0}" if kind in ("cuda", "xpu") else kind
    if wanted not in here:
        import torch

        why = f"no {kind.upper()} device" if not any(d.startswith(kind) for d in here) else f"no {wanted}"
        raise ConfigError(f"{flag} {device}: this machine has {why} (torch {torch.__version__} sees "
                          f"{', '.join(here)}); choose one of those")
    return device
