"""A data source: everything rknas needs to know about one data set, in one object.

Built-in sets (``rknas/data/builtin.py``) and plugin sets (the ``register_datasets`` hook) are
the same type, so ``rknas data list``, ``rknas data download``, ``--download`` and the
missing-data errors treat them alike (``rknas/data/download.py``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from rknas.errors import ConfigError, RknasError
from rknas.plugins import Registered
from rknas.registry import by_name, collect

if TYPE_CHECKING:
    from rknas.config import DataSpec
    from rknas.data.core import TensorData

MIRROR_ENV = "RKNAS_DATA_MIRROR"
TIMEOUT_S = 60.0

Loader = Callable[..., "tuple[TensorData, TensorData]"]
Where = Callable[[Optional[Path]], list[str]]
Present = Callable[[Optional[Path]], Optional[bool]]
Verify = Callable[[Path], Optional[list[Path]]]
Describe = Callable[..., "DataFacts"]
Fetch = Callable[..., Optional[Iterable[str]]]
FETCH_OPTIONS = ("mirror", "progress", "timeout")  # the keywords a fetch may declare


def download_command(name: str, root: Optional[Union[str, Path]] = None) -> str:
    """The CLI command that downloads ``name``; missing-data errors quote it.

    Args:
        name: The data set's name.
        root: The folder it goes to; ``DIR`` when not known.

    Returns:
        ``rknas data download NAME --root ROOT``.
    """
    return f"rknas data download {name} --root {root or 'DIR'}"


@dataclass(frozen=True)
class DataFacts:
    """A data set's sizes and image shape: what planning needs, known without reading the images.

    Attributes:
        train_images: Images in the training split.
        test_images: Images in the test split.
        in_channels: Channels of an image (1: grey, 3: colour).
        image_size: Height (= width) of an image in pixels.
        classes: Number of classes.
    """

    train_images: int
    test_images: int
    in_channels: int
    image_size: int
    classes: int

    @classmethod
    def of(cls, train: TensorData, test: TensorData) -> DataFacts:
        """The facts of two loaded splits."""
        return cls(len(train), len(test), train.in_channels, train.image_size, train.classes)

    def __str__(self) -> str:
        return (f"{self.train_images:,} + {self.test_images:,} images of {self.in_channels}x{self.image_size}x"
                f"{self.image_size}, {self.classes} classes")


@dataclass(frozen=True)
class DataSource(Registered):
    """One data set: how to load it, where its files are, and (optionally) how to fetch them.

    A plugin registers one per set through ``register_datasets(register)``:
    ``register(DataSource(name="toy", label="Toy", load=load_toy, where=..., present=...,
    fetch=fetch_toy))``. Only ``name`` and ``load`` are required.

    Attributes:
        name: Unique name used in search spaces and on the command line.
        load: ``load(root, **options) -> (train, test)``, two ``rknas.data.TensorData`` held
            in memory; ``options`` come from the ``data.options`` mapping of a search space.
            It raises ``ConfigError`` saying what is missing when the files are not there.
        label: Human name for messages (``"CIFAR-10"``); default: ``name``.
        where: ``where(root)`` -> the paths the loader reads, as text for ``rknas data list``
            (``root`` is None when none was given; show it as ``ROOT`` then). Default:
            "provided by PACKAGE".
        present: ``present(root)`` -> whether ``load(root)`` will find the files (a quick
            look, no reading); None when it cannot tell. ``root`` may be None or a folder that
            does not exist. Default: always None. Required with ``fetch``.
        fetch: ``fetch(root)`` downloads the set's files into ``root`` (rknas passes a fresh
            temporary folder inside the real root and moves every file left there into place
            only when ``fetch`` returns, so a failed fetch leaves nothing behind). It may
            declare the keyword parameters ``mirror`` (a URL prefix or None), ``progress``
            (show a progress bar) and ``timeout`` (seconds); rknas passes those it declares.
            It returns the URLs it used, or None. None (the default): nothing to download.
        verify: ``verify(root)`` -> the set's files under ``root`` when a complete and intact
            copy is there (checksums checked where known), else None; ``rknas data download``
            fetches only when it returns None. Default: ``present(root)``, listing no files.
        how: How to get the files by hand: shown by ``rknas data list`` (after the download
            command when there is a ``fetch``). Default: "see PACKAGE's documentation".
        describe: ``describe(root, **options) -> DataFacts`` (the same arguments as ``load``):
            the sizes and shape without reading the images (file headers, a documented size),
            raising ``ConfigError`` as ``load`` would when the files are missing. Lets
            ``rknas evaluate`` plan, and refuse, before torch and the images are loaded; rknas
            checks it against the loaded set before training. None (the default): planning loads.
        package, version: Filled in by rknas from the registering distribution; do not set them.
    """

    name: str
    load: Loader
    label: str = ""
    where: Optional[Where] = None
    present: Optional[Present] = None
    fetch: Optional[Fetch] = None
    verify: Optional[Verify] = None
    how: str = ""
    describe: Optional[Describe] = None
    package: str = field(default="", compare=False)
    version: str = field(default="", compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or any(c in self.name for c in ", "):
            raise ValueError(f"DataSource name must be a non-empty string without commas or spaces, got {self.name!r}")
        if not callable(self.load):
            raise TypeError(f"DataSource {self.name!r}: load must be callable, got {self.load!r}")
        if self.fetch is not None and self.present is None:
            raise ValueError(f"DataSource {self.name!r} has a fetch but no present check: rknas could not tell when to fetch")
        if not self.label:
            object.__setattr__(self, "label", self.name)


    @property
    def downloadable(self) -> bool:
        """Whether ``rknas data download`` can fetch the set."""
        return self.fetch is not None

    def places(self, root: Optional[Path]) -> list[str]:
        """Where the loader looks, as text (see ``where``)."""
        return self.where(root) if self.where else [f"provided by {self.provider}"]

    def is_present(self, root: Optional[Path]) -> Optional[bool]:
        """Whether the loader will find the files under ``root`` (None: cannot tell)."""
        return self.present(root) if self.present else None

    def intact(self, root: Path) -> Optional[list[Path]]:
        """The files of a complete, intact copy under ``root``, or None (see ``verify``)."""
        if self.verify:
            return self.verify(root)
        return [] if self.is_present(root) else None

    def how_to_get(self, root: Optional[Union[str, Path]] = None) -> str:
        """What ``rknas data list`` says under "how to get it"."""
        if self.fetch is None:
            return self.how or f"see {self.provider}'s documentation"
        return download_command(self.name, root) + (f" (or: {self.how})" if self.how else "")

    def run_fetch(self, root: Path, **options: Any) -> list[str]:
        """Call ``fetch(root, ...)`` with the options it declares; the URLs it reports."""
        if self.fetch is None:
            raise ValueError(f"{self.name} has nothing to fetch")
        try:
            params = list(inspect.signature(self.fetch).parameters.values())
        except (TypeError, ValueError):  # a callable without a signature (a C function): the root only
            params = []
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            wanted = set(FETCH_OPTIONS)
        else:
            wanted = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        used = self.fetch(root, **{k: v for k, v in options.items() if k in wanted})
        return [str(u) for u in used or []]


def datasets() -> dict[str, DataSource]:
    """Every registered data source by name, built-ins first.

    Returns:
        Sources keyed by name, each stamped with the package and version that registered it.
        A plugin that still calls ``register(name, loader)`` gets a ``DataSource`` with only
        ``name`` and ``load`` (and a ``DeprecationWarning``).

    Raises:
        PluginError: Two plugins register the same data-set name, or a plugin registers
            something that is neither a ``DataSource`` nor a ``(name, loader)`` pair.
    """
    return by_name(collect("register_datasets", DataSource, _validate, shown="rknas.data.DataSource"), "data set")


def find_dataset(name: str) -> DataSource:
    """The registered source called ``name``.

    Raises:
        ConfigError: No such data set (the known ones are listed).
    """
    known = datasets()
    if name not in known:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def describe_dataset(spec: DataSpec) -> Optional[DataFacts]:
    """A data set's facts from its ``describe``, without loading it; None when it has none.

    Args:
        spec: The data set's name, root and options (a search space's ``data`` section).

    Returns:
        Its ``DataFacts``, or None: the source cannot describe itself, so the caller loads it.

    Raises:
        ConfigError: Unknown data set, files missing, or a ``describe`` that failed (one line).
    """
    source = find_dataset(spec.name)
    if source.describe is None:
        return None
    facts = call_source(source, source.describe, spec, "described")
    if not isinstance(facts, DataFacts):
        raise ConfigError(f"data set {spec.name!r} ({source.provider}): describe() returned {type(facts).__name__}, "
                          "not rknas.data.DataFacts")
    return facts


def call_source(source: DataSource, fn: Callable[..., Any], spec: DataSpec, what: str) -> Any:
    """``fn(spec.root, **spec.options)`` (a source's ``load`` or ``describe``); a plugin's failure in one line.

    Raises:
        RknasError: As ``fn`` raised it (it says what is missing).
        ConfigError: Any other exception, as "data set NAME (PROVIDER) could not be WHAT: ...".
    """
    try:
        return fn(spec.root, **spec.options)
    except RknasError:
        raise
    except Exception as exc:
        raise ConfigError(f"data set {spec.name!r} ({source.provider}) could not be {what}: "
                          f"{type(exc).__name__}: {exc}") from None


def _validate(provider: str, *args: Any) -> Any:
    """A source as registered; the old ``register(name, loader)`` becomes a ``DataSource`` with a warning."""
    if len(args) == 2 and isinstance(args[0], str) and callable(args[1]):
        warnings.warn(
            f"plugin {provider}: register({args[0]!r}, loader) is deprecated; register a "
            f"rknas.data.DataSource(name={args[0]!r}, load=loader, ...) instead",
            DeprecationWarning,
            stacklevel=2,  # re-issued at the plugin's register(...) line by registry.collect
        )
        return DataSource(name=args[0], load=args[1])
    return args[0] if len(args) == 1 else args
