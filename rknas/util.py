"""Small helpers with one definition each: atomic files, differences of nested settings, the default device."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def default_device() -> str:
    """CUDA when a GPU is visible, else the CPU: where work goes when no device is given."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
