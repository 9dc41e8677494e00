"""Download data sets, list where each is looked for, and check one before a run loads it.

Every function here loops over the registered ``DataSource`` objects (built-ins and plugin
sets alike, ``rknas.data.source.datasets``): whatever a source can do (fetch, check presence) it
does through its own fields, so a plugin set with a ``fetch`` downloads like a built-in one.

A download goes into a hidden temporary folder under ROOT; only when the source's ``fetch``
returns (for the built-ins: every file checked against torchvision's MD5 sum and read by
torchvision's own dataset class) are its files moved to where the loader (and torchvision
itself) looks for them. A failed or interrupted download therefore leaves nothing behind, and a
set that is already in place is not fetched again.

Mirrors: a mirror is a URL prefix holding the same files under their original names. Each
file is fetched from ``MIRROR/<file name of torchvision's URL>``: with
``--mirror https://example.org/datasets`` CIFAR-10 comes from
``https://example.org/datasets/cifar-10-python.tar.gz`` and MNIST's training images from
``https://example.org/datasets/train-images-idx3-ubyte.gz``. The ``mirror`` argument wins
over the ``RKNAS_DATA_MIRROR`` environment variable; with neither, torchvision's URLs are used
(for MNIST and Fashion-MNIST, each of torchvision's mirrors in turn). Any URL scheme urllib
opens works (``http``, ``https``, ``ftp``, ``file``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Optional, Union

from rknas.data.source import MIRROR_ENV, TIMEOUT_S, DataSource, download_command
from rknas.errors import ConfigError, RknasError

__all__ = ["MIRROR_ENV", "TIMEOUT_S", "download", "download_command", "ensure_dataset", "list_datasets"]


def _sources() -> dict[str, DataSource]:
    from rknas.data.source import datasets

    return datasets()


def _check_mirror(mirror: str) -> str:
    scheme = urllib.parse.urlparse(mirror).scheme
    if scheme not in ("http", "https", "ftp", "file"):
        raise RknasError(f"mirror {mirror!r} is not a URL: expected http://, https://, ftp:// or file:// followed by a path")
    return mirror


def _summary(paths: list[Path]) -> list[dict]:
    return [{"path": str(p), "bytes": p.stat().st_size} for p in paths]


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first (removed again on failure)."""
    out = []
    for p in (path, *path.parents):
        if p.exists():
            break
        out.append(p)
    return out


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:
        with contextlib.suppress(OSError):
            d.rmdir()


def download(
    name: str,
    root: Union[str, Path],
    mirror: Optional[str] = None,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
) -> dict:
    """Download a data set into ``root``, where rknas's loader for it looks.

    Args:
        name: A data set with a ``fetch`` (``rknas data list`` marks them downloadable): the
            built-in cifar10, cifar100, svhn, mnist, fashion_mnist, or a plugin's.
        root: The folder to pass later as ``--data-root`` / ``data.root``; created if needed.
        mirror: URL prefix that holds torchvision's files under their original names (see the
            module docstring); default: ``$RKNAS_DATA_MIRROR``, else torchvision's own URLs.
        progress: Show a progress bar on stderr.
        timeout: Seconds to wait for a server before giving up.

    Returns:
        A summary: ``name``, ``root``, ``status`` ("downloaded" or "present": already there,
        nothing fetched), ``sources`` (the URLs used), ``files`` (each ``path`` and ``bytes``)
        and ``bytes`` (their total).

    Raises:
        RknasError: Unknown name, a root that cannot be written, a bad mirror, a server that
            cannot be reached or serves something else (nothing is left under ``root`` then).
    """
    sources = _sources()
    src = sources.get(name)
    if src is None or not src.downloadable:
        extra = f" (nothing to download: {', '.join(src.places(None))}; {src.how_to_get()})" if src else ""
        downloadable = ", ".join(n for n, s in sources.items() if s.downloadable)
        raise RknasError(f"cannot download {name!r}{extra}; downloadable data sets: {downloadable}")
    return _download(src, root, mirror=mirror, progress=progress, timeout=timeout)


def _download(src: DataSource, root, mirror: Optional[str], progress: bool, timeout: float) -> dict:
    from rknas.data.fetching import NETWORK_ERRORS, reason

    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror:
        _check_mirror(mirror)
    root = Path(root).expanduser().absolute()
    found = src.intact(root) if root.is_dir() else None
    if found is not None:
        files = _summary(found)
        return {"name": src.name, "root": str(root), "status": "present", "sources": [], "files": files,
                "bytes": sum(f["bytes"] for f in files)}

    created = _missing_ancestors(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".rknas-download-{src.name}-", dir=root))
    except OSError as exc:
        _remove_empty(created)
        raise RknasError(f"cannot write to {root}: {exc.strerror or exc}") from None
    done = False
    folder, old = tmp / "files", tmp / "replaced"
    try:
        folder.mkdir()
        try:
            used = src.run_fetch(folder, mirror=mirror, progress=progress, timeout=timeout)
        except RknasError:
            raise
        except NETWORK_ERRORS as exc:  # a plugin's fetch that does its own networking (these are OSErrors too)
            raise RknasError(f"cannot download {src.name} ({src.provider}): {reason(exc)}") from None
        except OSError:
            raise  # writing the files: "cannot write to ROOT" below
        except Exception as exc:
            raise RknasError(
                f"cannot download {src.name}: the fetch of {src.provider} failed: {type(exc).__name__}: {reason(exc)}"
            ) from None
        if src.is_present(folder) is False:
            raise RknasError(
                f"downloaded {src.name}, but its files are not where its loader looks: {', '.join(src.places(folder))}"
            )
        fetched = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        for rel in fetched:  # a stale copy (wrong checksum, incomplete) is replaced file by file
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                (old / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(dst, old / rel)
            os.replace(folder / rel, dst)
        done = True
    except OSError as exc:
        raise RknasError(f"cannot write to {root}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            _remove_empty(created)
    files = _summary([root / rel for rel in fetched])
    return {"name": src.name, "root": str(root), "status": "downloaded", "sources": used, "files": files,
            "bytes": sum(f["bytes"] for f in files)}


def list_datasets(root: Optional[Union[str, Path]] = None) -> list[dict]:
    """Every data set rknas knows, where its loader looks and whether the files are there.

    Args:
        root: The folder to check (the ``--data-root`` of search and train); without it only
            sets that need no root (digits, Debian's Fashion-MNIST) can be found.

    Returns:
        One dict per set, built-ins first: ``name``, ``provider`` (``"package version"`` of
        rknas or of a plugin), ``where`` (the paths the loader reads), ``present`` (True/False;
        None for a set that has no presence check), ``downloadable`` and ``how`` (how to get it).
    """
    base = Path(root).expanduser() if root else None
    return [
        {"name": src.name, "provider": src.provider, "downloadable": src.downloadable, "how": src.how_to_get(root),
         "where": src.places(base), "present": src.is_present(base)}
        for src in _sources().values()
    ]


def ensure_dataset(
    spec_or_name,
    root: Optional[Union[str, Path]] = None,
    download: bool = False,
    mirror: Optional[str] = None,
    progress: bool = True,
) -> Optional[dict]:
    """Make sure a data set's files are where its loader looks, downloading them if allowed.

    Meant for ``search``/``train`` before they load data (e.g. behind a ``--download`` flag).

    Args:
        spec_or_name: A ``DataSpec`` or a data set name.
        root: Overrides the spec's ``root``.
        download: Fetch a missing downloadable set instead of failing.
        mirror: Passed to ``download`` (default ``$RKNAS_DATA_MIRROR``).
        progress: Show a progress bar while downloading.

    Returns:
        ``download``'s summary when something was fetched, else None (already there, or a set
        rknas cannot download, such as digits and image_folder, whose loaders report what is
        missing).

    Raises:
        ConfigError: The set is missing and ``download`` is False, or it has no root to go to.
        RknasError: The download failed (see ``download``).
    """
    name = spec_or_name if isinstance(spec_or_name, str) else spec_or_name.name
    if root is None and not isinstance(spec_or_name, str):
        root = spec_or_name.root
    src = _sources().get(name)
    if src is None or not src.downloadable:
        return None
    if src.is_present(Path(root).expanduser() if root else None):
        return None
    if not root:
        raise ConfigError(f"{src.label} needs a root folder: set data.root or pass --data-root (and `{download_command(name)}`)")
    if not download:
        raise ConfigError(f"{src.label} not found under {root}; download it with `{download_command(name, root)}`")
    return _download(src, root, mirror=mirror, progress=progress, timeout=TIMEOUT_S)
