"""The data sets torchvision knows: their URLs, checksums, formats and folder layouts.

One class per format (CIFAR's python archive, SVHN's ``.mat`` files, MNIST's IDX files) says
how torchvision's dataset class names its URLs and files; ``TorchvisionSet.source`` turns one
set into a ``DataSource`` whose ``fetch`` downloads with torchvision's own URLs and MD5 sums
and lets torchvision's class extract and read the result, exactly as torchvision would.
A new set in a known format is one ``…Set(name, class).source(...)`` line in
``rknas/data/builtin.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rknas.data.fetching import Plan, fetch_files, reason
from rknas.data.loaders import _idx_files
from rknas.data.source import TIMEOUT_S, DataSource, Describe, Loader
from rknas.errors import RknasError


def _mirror_url(mirror: str, url: str) -> str:
    return mirror.rstrip("/") + "/" + os.path.basename(urllib.parse.urlparse(url).path)


def _files_under(root: Path, rel_paths: list[str]) -> list[Path]:
    out = []
    for rel in rel_paths:
        p = root / rel
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                out.append(f)
    return out


@dataclass(frozen=True)
class TorchvisionSet:
    """One set read by a torchvision dataset class; subclasses know the class's format.

    Attributes:
        name: The rknas name of the set.
        tv_class: The ``torchvision.datasets`` class.
        default_root: Looked in when no root is given (Debian's Fashion-MNIST), else None.
    """

    name: str
    tv_class: str
    default_root: Optional[Path] = None

    # --- what a format says -------------------------------------------------------------

    def _mirrored(self, base: type, mirror: str) -> dict[str, Any]:
        """Class attributes that point ``base`` at ``mirror``."""
        raise NotImplementedError

    def _plan(self, cls: Any) -> Plan:
        """(candidate URLs, path under the download folder, MD5) for each file to fetch."""
        raise NotImplementedError

    def _kept(self, cls: Any) -> list[str]:
        """What the loader reads, relative to ROOT: what is moved into place (archives are not)."""
        raise NotImplementedError

    def _read(self, cls: Any, folder: Path) -> None:
        """Let torchvision's class extract the verified files and read both splits."""
        cls(str(folder), train=True, download=True)
        cls(str(folder), train=False, download=False)

    def _found(self, root: Path, verify: bool) -> Optional[list[Path]]:
        """The files the loader reads under ``root`` when all are there, else None; ``verify``
        also checks torchvision's MD5 sums where it has them for the extracted files."""
        raise NotImplementedError

    def _where(self, shown: str) -> list[str]:
        raise NotImplementedError

    # --- the same for every format ----------------------------------------------------

    def tv_cls(self, mirror: Optional[str] = None) -> type:
        """torchvision's class, pointed at ``mirror``.

        The subclass keeps the original class name, because MNIST-like classes name their folder
        (ROOT/MNIST/raw) after it; it is created per call so that it sees the class attributes
        (URLs, checksums) as they are now.
        """
        import torchvision.datasets as tvd

        base = getattr(tvd, self.tv_class)
        attrs: dict = {"__module__": __name__, "__qualname__": base.__name__}
        if mirror:
            attrs.update(self._mirrored(base, mirror))
        return type(base.__name__, (base,), attrs)

    def where(self, root: Optional[Path]) -> list[str]:
        """Where the loader looks (``ROOT`` without a root)."""
        out = self._where(str(root) if root else "ROOT")
        if self.default_root:
            out.append(f"{self.default_root}/ (without a root)")
        return out

    def present(self, root: Optional[Path]) -> bool:
        """Whether the loader finds the files under ``root`` (or the default root without one)."""
        base = root if root is not None else self.default_root
        return bool(base is not None and base.is_dir() and self._found(base, verify=False) is not None)

    def verify(self, root: Path) -> Optional[list[Path]]:
        """The files under ``root`` if all are there and match torchvision's MD5 sums, else None."""
        return self._found(root, verify=True) if root.is_dir() else None

    def fetch(self, root: Path, *, mirror: Optional[str] = None, progress: bool = True, timeout: float = TIMEOUT_S) -> list[str]:
        """Download with torchvision's URLs (or ``mirror``) and MD5 sums into ``root``, then let
        torchvision extract and read the files; only what the loader reads is left in ``root``."""
        cls = self.tv_cls(mirror)
        plan = self._plan(cls)
        sources = fetch_files(self.name, plan, root, progress=progress, timeout=timeout)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints "Extracting ..."
                self._read(cls, root)
        except Exception as exc:
            raise RknasError(
                f"downloaded {self.name} from {', '.join(sources)}, but torchvision could not read it: {reason(exc)}"
            ) from None
        kept = {root / rel for rel in self._kept(cls)}
        for f in [p for p in root.rglob("*") if p.is_file()]:
            if f not in kept and not kept & set(f.parents):
                f.unlink()  # the archives, and anything else torchvision left
        return sources

    def source(self, label: str, load: Loader, how: str = "", describe: Optional[Describe] = None) -> DataSource:
        """This set as a ``DataSource``.

        Args:
            label: Human name for messages.
            load: The loader.
            how: Another way to get the files, shown after the download command.
            describe: The set's facts without loading it (``DataSource.describe``), if it can.

        Returns:
            A downloadable ``DataSource``.
        """
        return DataSource(name=self.name, label=label, load=load, where=self.where, present=self.present,
                          fetch=self.fetch, verify=self.verify, how=how, describe=describe)


class CifarSet(TorchvisionSet):
    """CIFAR-10/100, the python version: one archive holding a folder of pickled batches."""

    def _mirrored(self, base, mirror):
        return {"url": _mirror_url(mirror, base.url)}

    def _plan(self, cls):
        return [([cls.url], cls.filename, cls.tgz_md5)]

    def _kept(self, cls):
        return [cls.base_folder]

    def _found(self, root, verify):
        from torchvision.datasets.utils import check_integrity

        cls = self.tv_cls()
        listed = cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])]
        if not all(check_integrity(str(root / cls.base_folder / f), md5 if verify else None) for f, md5 in listed):
            return None
        return _files_under(root, self._kept(cls))

    def _where(self, shown):
        return [f"{shown}/{self.tv_cls().base_folder}/"]


class SvhnSet(TorchvisionSet):
    """SVHN: one ``.mat`` file per split."""

    SPLITS = ("train", "test")

    def _mirrored(self, base, mirror):
        return {"split_list": {k: [_mirror_url(mirror, v[0]), *v[1:]] for k, v in base.split_list.items()}}

    def _plan(self, cls):
        return [([url], filename, md5) for url, filename, md5 in (cls.split_list[s] for s in self.SPLITS)]

    def _kept(self, cls):
        return [cls.split_list[s][1] for s in self.SPLITS]

    def _read(self, cls, folder):
        for split in self.SPLITS:
            cls(str(folder), split=split, download=True)

    def _found(self, root, verify):
        from torchvision.datasets.utils import check_integrity

        cls = self.tv_cls()
        files = [(root / cls.split_list[s][1], cls.split_list[s][2]) for s in self.SPLITS]
        if not all(check_integrity(str(p), md5 if verify else None) for p, md5 in files):
            return None
        return [p for p, _ in files]

    def _where(self, shown):
        cls = self.tv_cls()
        return [f"{shown}/{cls.split_list[s][1]}" for s in self.SPLITS]


class MnistSet(TorchvisionSet):
    """MNIST and its look-alikes: four gzipped IDX files in ROOT/<class name>/raw."""

    def _mirrored(self, base, mirror):
        return {"mirrors": [mirror.rstrip("/") + "/"]}

    def _plan(self, cls):
        return [([m + filename for m in cls.mirrors], f"{cls.__name__}/raw/{filename}", md5) for filename, md5 in cls.resources]

    def _kept(self, cls):
        return [f"{cls.__name__}/raw/{filename.removesuffix('.gz')}" for filename, _ in cls.resources]

    def _found(self, root, verify):  # torchvision has no MD5 sums for the extracted files
        found = _idx_files(root, self.tv_cls().__name__)
        return list(found.values()) if found else None

    def _where(self, shown):
        return [f"{shown}/{self.tv_cls().__name__}/raw/*-ubyte(.gz)"]
