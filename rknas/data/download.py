"""Download the data sets rknas reads, using torchvision's URLs, checksums and formats.

Each file is fetched into a hidden temporary folder under ROOT and checked against
torchvision's MD5 sum; torchvision's own dataset class then extracts and reads it, and only
then is it moved to where rknas's loaders (and torchvision itself) look for it. A failed or
interrupted download therefore leaves nothing behind, and a set that is already in place is
not fetched again.

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
import http.client
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from rknas.errors import ConfigError, RknasError

MIRROR_ENV = "RKNAS_DATA_MIRROR"
TIMEOUT_S = 60.0
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class _Source:
    """How one downloadable set maps onto its torchvision class."""

    name: str
    label: str
    tv_class: str  # torchvision.datasets class
    kind: str  # "cifar", "svhn" or "mnist": how the class names its URLs and files


SOURCES = {
    s.name: s
    for s in (
        _Source("cifar10", "CIFAR-10", "CIFAR10", "cifar"),
        _Source("cifar100", "CIFAR-100", "CIFAR100", "cifar"),
        _Source("svhn", "SVHN", "SVHN", "svhn"),
        _Source("mnist", "MNIST", "MNIST", "mnist"),
        _Source("fashion_mnist", "Fashion-MNIST", "FashionMNIST", "mnist"),
    )
}


def download_command(name: str, root: Optional[Union[str, Path]] = None) -> str:
    """The CLI command that downloads ``name``; missing-data errors quote it."""
    return f"rknas data download {name} --root {root or 'DIR'}"


def _mirror_url(mirror: str, url: str) -> str:
    return mirror.rstrip("/") + "/" + os.path.basename(urllib.parse.urlparse(url).path)


def _check_mirror(mirror: str) -> str:
    scheme = urllib.parse.urlparse(mirror).scheme
    if scheme not in ("http", "https", "ftp", "file"):
        raise RknasError(f"mirror {mirror!r} is not a URL: expected http://, https://, ftp:// or file:// followed by a path")
    return mirror


def _tv_class(src: _Source, mirror: Optional[str]):
    """torchvision's class for ``src``, pointed at ``mirror``.

    The subclass keeps the original class name, because MNIST-like classes name their folder
    (ROOT/MNIST/raw) after it; it is created per call so that it sees the class attributes
    (URLs, checksums) as they are now.
    """
    import torchvision.datasets as tvd

    base = getattr(tvd, src.tv_class)
    attrs: dict = {"__module__": __name__, "__qualname__": base.__name__}
    if mirror:
        if src.kind == "cifar":
            attrs["url"] = _mirror_url(mirror, base.url)
        elif src.kind == "svhn":
            attrs["split_list"] = {k: [_mirror_url(mirror, v[0]), *v[1:]] for k, v in base.split_list.items()}
        else:
            attrs["mirrors"] = [mirror.rstrip("/") + "/"]
    return type(base.__name__, (base,), attrs)


def _fetch_plan(src: _Source, cls) -> list[tuple[list[str], str, str]]:
    """(candidate URLs, path under the download folder, MD5) for each file to fetch."""
    if src.kind == "cifar":
        return [([cls.url], cls.filename, cls.tgz_md5)]
    if src.kind == "svhn":
        return [([url], filename, md5) for url, filename, md5 in (cls.split_list[s] for s in ("train", "test"))]
    return [([m + filename for m in cls.mirrors], f"{cls.__name__}/raw/{filename}", md5) for filename, md5 in cls.resources]


def _kept_paths(src: _Source, cls) -> list[str]:
    """What the loaders read, relative to ROOT: this is what is moved into place (archives are not)."""
    if src.kind == "cifar":
        return [cls.base_folder]
    if src.kind == "svhn":
        return [cls.split_list[s][1] for s in ("train", "test")]
    return [f"{cls.__name__}/raw/{filename.removesuffix('.gz')}" for filename, _ in cls.resources]


def _extract_and_read(src: _Source, cls, folder: Path) -> None:
    """Let torchvision's class extract the verified files and read both splits."""
    with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints "Extracting ..."
        if src.kind == "svhn":
            for split in ("train", "test"):
                cls(str(folder), split=split, download=True)
        else:
            cls(str(folder), train=True, download=True)
            cls(str(folder), train=False, download=False)


def _present(src: _Source, root: Path, verify: bool) -> bool:
    """Whether the loader will find ``src`` under ``root``; ``verify`` also checks torchvision's MD5 sums
    where torchvision has them for the extracted files (CIFAR, SVHN)."""
    from torchvision.datasets.utils import check_integrity

    cls = _tv_class(src, None)
    if src.kind == "mnist":
        from rknas.data.loaders import _idx_files

        return _idx_files(root, cls.__name__) is not None
    if src.kind == "cifar":
        listed = cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])]
        files = [(root / cls.base_folder / f, md5) for f, md5 in listed]
    else:
        files = [(root / cls.split_list[s][1], cls.split_list[s][2]) for s in ("train", "test")]
    return all(check_integrity(str(p), md5 if verify else None) for p, md5 in files)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _fetch(url: str, dest: Path, progress, timeout: float) -> None:
    """Copy ``url`` to ``dest``; network failures raise one of _NETWORK_ERRORS."""
    request = urllib.request.Request(url, headers={"User-Agent": "rknas"})
    with urllib.request.urlopen(request, timeout=timeout) as resp, open(dest, "wb") as fh:
        length = resp.headers.get("Content-Length", "")  # file:// answers carry it too
        total = int(length) if length.isdigit() else None
        progress.start()  # only once a server answers, so a failure prints no empty bar
        task = progress.add_task(dest.name, total=total)
        got = 0
        while chunk := resp.read(1 << 16):
            fh.write(chunk)
            got += len(chunk)
            progress.update(task, advance=len(chunk))
        if total is not None and got < total:
            raise http.client.IncompleteRead(b"", total - got)


def _files_under(root: Path, rel_paths: list[str]) -> list[dict]:
    out = []
    for rel in rel_paths:
        p = root / rel
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                out.append({"path": str(f), "bytes": f.stat().st_size})
    return out


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first (removed again on failure)."""
    out = []
    for p in (path, *path.parents):
        if p.exists():
            break
        out.append(p)
    return out


def download(
    name: str,
    root: Union[str, Path],
    mirror: Optional[str] = None,
    progress: bool = True,
    timeout: float = TIMEOUT_S,
) -> dict:
    """Download a data set into ``root``, where rknas's loader for it looks.

    Args:
        name: cifar10, cifar100, svhn, mnist or fashion_mnist.
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
    return _download(name, root, mirror=mirror, progress=progress, timeout=timeout)


def _download(name: str, root, mirror: Optional[str], progress: bool, timeout: float) -> dict:
    if name not in SOURCES:
        extra = ""
        if name == "digits":
            extra = " (digits ships inside scikit-learn: nothing to download)"
        elif name == "image_folder":
            extra = " (image_folder reads your own folder of images: nothing to download)"
        raise RknasError(f"cannot download {name!r}{extra}; downloadable data sets: {', '.join(SOURCES)}")
    src = SOURCES[name]
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror:
        _check_mirror(mirror)
    root = Path(root).expanduser().absolute()
    cls = _tv_class(src, mirror)
    kept = _kept_paths(src, cls)
    if root.is_dir() and _present(src, root, verify=True):
        files = _files_under(root, kept) if src.kind != "mnist" else _mnist_files(root, cls.__name__)
        return {"name": name, "root": str(root), "status": "present", "sources": [], "files": files,
                "bytes": sum(f["bytes"] for f in files)}

    created = _missing_ancestors(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".rknas-download-{name}-", dir=root))
    except OSError as exc:
        _remove_empty(created)
        raise RknasError(f"cannot write to {root}: {exc.strerror or exc}") from None
    done = False
    try:
        sources = _fetch_all(src, cls, tmp, progress, timeout)
        try:
            _extract_and_read(src, cls, tmp)
        except Exception as exc:
            raise RknasError(
                f"downloaded {name} from {', '.join(sources)}, but torchvision could not read it: {_reason(exc)}"
            ) from None
        old = tmp / ".replaced"
        for rel in kept:  # a stale copy (wrong checksum, incomplete) is replaced as a whole
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                (old / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(dst, old / rel)
            os.replace(tmp / rel, dst)
        done = True
    except OSError as exc:
        raise RknasError(f"cannot write to {root}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            _remove_empty(created)
    files = _files_under(root, kept)
    return {"name": name, "root": str(root), "status": "downloaded", "sources": sources, "files": files,
            "bytes": sum(f["bytes"] for f in files)}


def _mnist_files(root: Path, folder: str) -> list[dict]:
    from rknas.data.loaders import _idx_files

    found = _idx_files(root, folder) or {}
    return [{"path": str(p), "bytes": p.stat().st_size} for p in found.values()]


def _remove_empty(dirs: list[Path]) -> None:
    for d in dirs:
        with contextlib.suppress(OSError):
            d.rmdir()


def _fetch_all(src: _Source, cls, tmp: Path, progress: bool, timeout: float) -> list[str]:
    """Fetch and MD5-check every file of ``src`` into ``tmp``; the URLs used."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    from torchvision.datasets.utils import calculate_md5

    used = []
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=Console(stderr=True), disable=not progress,
    )
    try:
        for urls, rel, md5 in _fetch_plan(src, cls):
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tried, network = [], False
            for url in urls:
                try:
                    _fetch(url, dest, bar, timeout)
                except _NETWORK_ERRORS as exc:
                    tried.append(f"{url}: {_reason(exc)}")
                    network = True
                    continue
                actual = calculate_md5(str(dest))
                if actual != md5:
                    tried.append(f"{url}: MD5 {actual} where torchvision expects {md5} (corrupt or not the original file)")
                    continue
                used.append(url)
                break
            else:
                advice = "check your connection or use a" if network else "use another"
                raise RknasError(
                    f"cannot download {src.name} from {', nor from '.join(tried)}; "
                    f"{advice} mirror (--mirror URL or ${MIRROR_ENV})"
                )
    finally:
        if bar.live.is_started:
            bar.stop()
    return used


def list_datasets(root: Optional[Union[str, Path]] = None) -> list[dict]:
    """Every data set rknas knows, where its loader looks and whether the files are there.

    Args:
        root: The folder to check (the ``--data-root`` of search and train); without it only
            sets that need no root (digits, Debian's Fashion-MNIST) can be found.

    Returns:
        One dict per set: ``name``, ``provider`` (rknas or a plugin's package), ``where``
        (the paths the loader reads), ``present`` (True/False; None for plugin sets, which
        rknas cannot check), ``downloadable`` and ``how`` (how to get it).
    """
    from rknas.data.loaders import BUILTIN, FASHION_MNIST_DEBIAN

    base = Path(root).expanduser() if root else None
    shown = str(base) if base else "ROOT"
    rows = []
    for name in BUILTIN:
        row: dict[str, Any] = {"name": name, "provider": "rknas", "downloadable": name in SOURCES,
                               "how": download_command(name, root)}
        if name in SOURCES:
            src = SOURCES[name]
            cls = _tv_class(src, None)
            if src.kind == "cifar":
                row["where"] = [f"{shown}/{cls.base_folder}/"]
            elif src.kind == "svhn":
                row["where"] = [f"{shown}/{cls.split_list[s][1]}" for s in ("train", "test")]
            else:
                row["where"] = [f"{shown}/{cls.__name__}/raw/*-ubyte(.gz)"]
            row["present"] = bool(base and base.is_dir() and _present(src, base, verify=False))
            if name == "fashion_mnist":
                row["where"].append(f"{FASHION_MNIST_DEBIAN}/ (without a root)")
                if not base:
                    row["present"] = FASHION_MNIST_DEBIAN.is_dir() and _present(src, FASHION_MNIST_DEBIAN, verify=False)
                row["how"] += " (or: apt install dataset-fashion-mnist)"
        elif name == "digits":
            import importlib.util

            row.update(where=["inside scikit-learn"], present=importlib.util.find_spec("sklearn") is not None,
                       how="pip install scikit-learn")
        else:  # image_folder
            row.update(
                where=[f"{shown}/<class>/*", f"or {shown}/train/<class>/* + {shown}/test/<class>/*"],
                present=bool(base and base.is_dir() and any(p.is_dir() for p in base.iterdir())),
                how="your own images, a sub-folder per class",
            )
        rows.append(row)
    from rknas.registry import datasets

    for name, (_, provider) in sorted(datasets().items()):
        if name not in BUILTIN:
            rows.append({"name": name, "provider": provider, "downloadable": False, "where": [f"provided by {provider}"],
                         "present": None, "how": f"see {provider}'s documentation"})
    return rows


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
        rknas cannot download: digits, image_folder and plugin sets, whose loaders report
        what is missing).

    Raises:
        ConfigError: The set is missing and ``download`` is False, or it has no root to go to.
        RknasError: The download failed (see ``download``).
    """
    name = spec_or_name if isinstance(spec_or_name, str) else spec_or_name.name
    if root is None and not isinstance(spec_or_name, str):
        root = spec_or_name.root
    if name not in SOURCES:
        return None
    src = SOURCES[name]
    if root:
        base = Path(root).expanduser()
        if base.is_dir() and _present(src, base, verify=False):
            return None
    elif name == "fashion_mnist":
        from rknas.data.loaders import FASHION_MNIST_DEBIAN

        if FASHION_MNIST_DEBIAN.is_dir() and _present(src, FASHION_MNIST_DEBIAN, verify=False):
            return None
    if not root:
        raise ConfigError(f"{src.label} needs a root folder: set data.root or pass --data-root (and `{download_command(name)}`)")
    if not download:
        raise ConfigError(f"{src.label} not found under {root}; download it with `{download_command(name, root)}`")
    return _download(name, root, mirror=mirror, progress=progress, timeout=TIMEOUT_S)
