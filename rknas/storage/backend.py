"""Where studies live: any SQLAlchemy URL through Optuna's RDBStorage, SQLite by default."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rknas.errors import RknasError
from rknas.storage.defaults import DEFAULT_RETRY_S, DEFAULT_STORAGE, STORAGE_ENV
from rknas.storage.retry import RetryingRDBStorage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_url(url: Optional[str] = None) -> str:
    """The storage URL to use.

    Args:
        url: An explicit URL (``--storage``), or None.

    Returns:
        ``url``, else ``$RKNAS_STORAGE``, else ``sqlite:///studies/rknas.db``.
    """
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


# Python module of a database driver -> how to install it.
DRIVER_HINTS = {
    "psycopg": "pip install 'rknas[postgres]'",
    "psycopg2": "pip install psycopg2-binary, or use a postgresql:// URL with pip install 'rknas[postgres]'",
    "MySQLdb": "pip install mysqlclient, or use a mysql+pymysql:// URL with pip install pymysql",
    "pymysql": "pip install pymysql",
}


def safe_url(url: str) -> str:
    """A storage URL fit for messages and files.

    Args:
        url: A SQLAlchemy URL.

    Returns:
        The URL with its password shown as ``***`` (unchanged if it has none or is not a URL).
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy can parse: nothing to hide
        return url


def sqlite_file(url: str) -> Optional[Path]:
    """The file of a ``sqlite:///`` URL (None for other databases and in-memory SQLite)."""
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return Path(url[len("sqlite:///") :])
    return None


def discard_new_sqlite(storage: optuna.storages.BaseStorage, path: Optional[Path]) -> None:
    """Remove a SQLite file this command created if it holds no study.

    A command refused after opening the storage must leave nothing behind; Optuna writes its
    tables on open, so a refused first search would otherwise leave an empty database.

    Args:
        storage: The storage opened on ``path``.
        path: The file, or None when it existed before (or is not SQLite): nothing to do.
    """
    if path is None or study_names(storage):
        return
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()
    for leftover in (path, path.with_name(path.name + "-journal"), path.with_name(path.name + "-wal"),
                     path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)


def open_storage(url: Optional[str] = None, create: bool = True, heartbeat_interval: Optional[int] = None,
                 grace_period: Optional[int] = None, retry_s: float = DEFAULT_RETRY_S) -> RetryingRDBStorage:
    """Open (and for SQLite create) a storage; readers and the search share it safely.

    Args:
        url: A SQLAlchemy URL (default: ``storage_url()``).
        create: Create a missing SQLite file (False for commands that only read).
        heartbeat_interval: Seconds between the heartbeats a search records for its running
            trials (searches only; see ``rknas.storage.liveness``).
        grace_period: Seconds without a heartbeat after which a RUNNING trial is stale.
        retry_s: How long a call waits for a storage that went away (a restarting database,
            a locked SQLite file) before ``StorageUnavailable`` (see ``rknas.storage.retry``).

    Returns:
        Optuna's ``RDBStorage`` on that URL, retrying lost connections.

    Raises:
        RknasError: The storage cannot be opened or created, or its database driver is not
            installed (the message says what to install); one line saying why.
    """
    url = storage_url(url)
    kwargs: dict = {}
    path = sqlite_file(url)
    if path is not None:
        if not create and not path.is_file():
            where = "" if path.is_absolute() else f", relative to the current folder {Path.cwd()}"
            raise RknasError(f"storage {url} does not exist (no file {path.absolute()}{where}); run `rknas search` first, "
                             f"or pass --storage or set {STORAGE_ENV} to the study file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RknasError(f"cannot create the folder for storage {url}: {exc.strerror}") from None
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    if heartbeat_interval is not None:
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # Optuna's heartbeats are "experimental"
            return RetryingRDBStorage(url, retry_s=retry_s, where=safe_url(url), **kwargs)
    except Exception as exc:  # sqlalchemy raises many kinds; the user needs one line
        missing = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc if isinstance(exc, ImportError) else None
        if missing is not None:
            module = (getattr(missing, "name", None) or "").split(".")[0]
            hint = DRIVER_HINTS.get(module, f"install the Python module {module or '?'}")
            raise RknasError(
                f"cannot open storage {safe_url(url)}: its database driver ({module}) is not installed; {hint}"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RknasError(f"cannot open storage {safe_url(url)}: {first.replace(url, safe_url(url))}") from None


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the studies in a storage.

    Args:
        storage: An open storage.

    Returns:
        The study names.
    """
    return [s.study_name for s in storage.get_all_studies()]  # no trials read (a summary reads them all)


def open_study(name: str, url: Optional[str] = None) -> optuna.Study:
    """Open an existing study for reading: what ``best``, ``report``, ``evaluate`` do with ``--storage``.

    Args:
        name: The study's name.
        url: A SQLAlchemy URL (default: ``storage_url()``).

    Returns:
        The study.

    Raises:
        RknasError: The storage cannot be opened, or has no such study.
    """
    return load_study(open_storage(url, create=False), name)


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    """Load a study by name.

    Args:
        storage: An open storage.
        name: The study's name.

    Returns:
        The study.

    Raises:
        RknasError: No such study; the message lists the studies there are.
    """
    names = study_names(storage)
    if name not in names:
        raise RknasError(f"no study {name!r} in this storage; studies: {', '.join(names) or '(none)'}")
    return optuna.load_study(study_name=name, storage=storage)
