"""The benchmark table: every architecture of a sample, trained with one recipe, with full curves.

A table is one SQLite file. SQLite rather than Parquet because a build appends one finished
run at a time and must survive being killed between two of them: each run (its curve rows and
its summary) is one transaction, so an interrupted build leaves whole runs only and continues
where it stopped; pandas reads it (``pandas.read_sql``) and the standard library writes it, with
no extra dependency. A shipped table is the same file gzipped (``*.db.gz``); it is opened by
decompressing it next to a temporary copy, read-only.

Tables (``frames()`` gives them as DataFrames):

- ``meta``: the build's settings (``settings``: JSON, compared on every open) and provenance.
- ``archs``: one row per architecture: ``arch`` (id), ``key`` (canonical JSON of its sampled
  parameters, unique), ``source`` (``sampled`` or ``start_from``), ``params``, ``flops``,
  ``params_json`` (the Optuna parameters a search would propose for it) and ``network`` (the
  ``NetworkConfig`` JSON).
- ``runs``: one row per (arch, seed): ``status`` (``ok``, ``diverged``, ``failed``), ``error``,
  ``wall_s`` (training time of the whole run).
- ``curves``: one row per (arch, seed, epoch): ``val_accuracy``, ``test_accuracy``,
  ``train_loss``, ``wall_s`` (cumulative training time at the end of that epoch, validation
  included, the table's own test evaluation not: on a CPU with one thread per run the worker's
  CPU time, so that other work on the machine does not distort it; on a GPU, wall time).
"""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rknas.errors import ConfigError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS archs (
    arch INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
    params INTEGER NOT NULL, flops INTEGER NOT NULL, params_json TEXT NOT NULL, network TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    arch INTEGER NOT NULL REFERENCES archs(arch), seed INTEGER NOT NULL, status TEXT NOT NULL,
    error TEXT, wall_s REAL NOT NULL, PRIMARY KEY (arch, seed));
CREATE TABLE IF NOT EXISTS curves (
    arch INTEGER NOT NULL, seed INTEGER NOT NULL, epoch INTEGER NOT NULL, val_accuracy REAL NOT NULL,
    test_accuracy REAL NOT NULL, train_loss REAL, wall_s REAL NOT NULL, val_loss REAL, PRIMARY KEY (arch, seed, epoch));
"""


@dataclass(frozen=True)
class Arch:
    """One architecture of the table."""

    arch: int
    key: str
    source: str
    params: int
    flops: int
    sampled: dict[str, Any]  # the parameters a search proposes for it (p1_k, p1_strategy, ...)
    network: dict[str, Any]


@dataclass(frozen=True)
class EpochRow:
    """One epoch of one run."""

    epoch: int
    val_accuracy: float
    test_accuracy: float
    train_loss: Optional[float]
    wall_s: float
    val_loss: Optional[float] = None  # tables built before 2026-12-05 did not record it


def arch_key(sampled: dict[str, Any]) -> str:
    """The canonical text of an architecture's sampled parameters: equal architectures, equal keys."""
    return json.dumps(sampled, sort_keys=True, separators=(",", ":"))


GROWING = {"seeds"}  # tables before the seed count could grow stored it among their settings


def _settings_diff(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    keys = sorted((set(stored) | set(wanted)) - GROWING)
    return [k for k in keys if stored.get(k) != wanted.get(k)]


class BenchTable:
    """A benchmark table file, opened for reading or for a build.

    Use ``BenchTable.create`` for a build (it continues a table built with the same settings and
    refuses one built with others) and ``BenchTable.open`` to read.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, settings: dict[str, Any], *, temp: Optional[Path] = None):
        self.path = path
        self.conn = conn
        self.settings = settings
        self._temp = temp

    # ---- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, settings: dict[str, Any],
               normalize: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None) -> BenchTable:
        """Open ``path`` for a build with ``settings``, creating it when it does not exist.

        Args:
            path: The table file (``.db``); its folder is created.
            settings: What defines the table (space, recipe, epochs, data); JSON-able.
            normalize: Brings the stored settings to today's schema before they are compared
                (a key added to the space since the table was built is not a difference).

        Returns:
            The table, writable.

        Raises:
            ConfigError: The file is not a table, or was built with other settings (the
                message names the settings that differ).
        """
        path = Path(path)
        if path.suffix == ".gz":
            raise ConfigError(f"{path}: a compressed table is read-only; build into a .db file (gunzip it first to extend it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists() and path.stat().st_size > 0
        conn = _connect(path)
        try:
            if existed:
                stored = _read_settings(conn, path)
                stored = normalize(stored) if normalize else stored
                differ = _settings_diff(stored, settings)
                if differ:
                    raise ConfigError(f"{path} was built with other settings ({', '.join(differ)} differ): "
                                      "give another --out, or the same settings")
            else:
                with conn:
                    conn.executescript(_SCHEMA)
                    conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                    conn.execute("INSERT INTO meta VALUES ('settings', ?)", (json.dumps(settings, sort_keys=True),))
        except BaseException:
            _fold_wal(conn)
            conn.close()
            raise
        return cls(path, conn, settings)

    @classmethod
    def open(cls, path: Path, writable: bool = False) -> BenchTable:
        """Open a table to read; a ``.gz`` table is decompressed to a temporary file first.

        Args:
            path: The table file (``.db`` or ``.db.gz``).
            writable: Open a ``.db`` table for adding derived data (e.g. proxy scores) to it.

        Returns:
            The table.

        Raises:
            ConfigError: The file is missing, truncated or not a table.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such table; build one with `rknas bench build --out {path}`")
        temp = None
        source = path
        if writable and path.suffix == ".gz":
            raise ConfigError(f"{path}: a compressed table is read-only; gunzip it to add to it")
        if path.suffix == ".gz":
            fd, name = tempfile.mkstemp(suffix=".db", prefix="rknas-bench-")
            temp = Path(name)
            try:
                with gzip.open(path, "rb") as src, open(fd, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as exc:
                temp.unlink(missing_ok=True)
                raise ConfigError(f"{path}: not a readable gzipped table ({exc}); build or download it again") from None
            source = temp
        conn = _connect(source, readonly=not writable)
        try:
            settings = _read_settings(conn, path)
            conn.execute("SELECT count(*) FROM curves").fetchone()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ConfigError(f"{path}: not a readable table ({exc}); build it again") from None
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, settings, temp=temp)

    def close(self) -> None:
        """Close the file (and remove a decompressed copy); a built file is left in one piece, no WAL beside it."""
        if self._temp is None and not self.conn.in_transaction:
            _fold_wal(self.conn)
        self.conn.close()
        if self._temp is not None:
            self._temp.unlink(missing_ok=True)

    def __enter__(self) -> BenchTable:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- writing ------------------------------------------------------------------------------
    def add_archs(self, archs: Iterable[tuple[str, dict[str, Any], dict[str, Any], int, int]]) -> None:
        """Record architectures ``(source, sampled, network, params, flops)``; known ones are kept as they are."""
        with self.conn:
            for source, sampled, network, params, flops in archs:
                self.conn.execute(
                    "INSERT OR IGNORE INTO archs (key, source, params, flops, params_json, network) VALUES (?,?,?,?,?,?)",
                    (arch_key(sampled), source, int(params), int(flops), json.dumps(sampled, sort_keys=True),
                     json.dumps(network, sort_keys=True)),
                )

    def add_run(self, arch: int, seed: int, rows: list[EpochRow], status: str = "ok", error: Optional[str] = None) -> None:
        """Record one finished run and its curve, in one transaction (a crash leaves none of it)."""
        wall = rows[-1].wall_s if rows else 0.0
        with self.conn:
            self.conn.execute("DELETE FROM curves WHERE arch=? AND seed=?", (arch, seed))
            self.conn.executemany(
                "INSERT INTO curves (arch, seed, epoch, val_accuracy, test_accuracy, train_loss, wall_s, val_loss) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [(arch, seed, r.epoch, r.val_accuracy, r.test_accuracy, r.train_loss, r.wall_s, r.val_loss) for r in rows],
            )
            self.conn.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?)", (arch, seed, status, error, wall))

    # ---- reading ------------------------------------------------------------------------------
    def archs(self) -> list[Arch]:
        """Every architecture, by id."""
        rows = self.conn.execute("SELECT arch, key, source, params, flops, params_json, network FROM archs ORDER BY arch")
        return [Arch(a, k, s, p, f, json.loads(pj), json.loads(n)) for a, k, s, p, f, pj, n in rows]

    def done(self) -> set[tuple[int, int]]:
        """The (arch, seed) runs already recorded."""
        return {(a, s) for a, s in self.conn.execute("SELECT arch, seed FROM runs")}

    def runs(self) -> list[tuple[int, int, str, float]]:
        """Every recorded run as ``(arch, seed, status, wall seconds)``, by arch and seed."""
        return [(a, s, st, float(w or 0.0)) for a, s, st, w in
                self.conn.execute("SELECT arch, seed, status, wall_s FROM runs ORDER BY arch, seed")]

    def curves(self) -> dict[tuple[int, int], list[EpochRow]]:
        """Every run's curve, keyed by (arch, seed), epochs in order."""
        out: dict[tuple[int, int], list[EpochRow]] = {}
        val_loss = "val_loss" if _has_val_loss(self.conn) else "NULL"
        rows = self.conn.execute(
            f"SELECT arch, seed, epoch, val_accuracy, test_accuracy, train_loss, wall_s, {val_loss} FROM curves "
            "ORDER BY arch, seed, epoch")
        for a, s, e, v, t, loss, w, vl in rows:
            out.setdefault((a, s), []).append(EpochRow(e, v, t, loss, w, vl))
        return out

    def frames(self) -> dict[str, Any]:
        """The four tables as pandas DataFrames: ``meta``, ``archs``, ``runs``, ``curves``."""
        import pandas as pd

        return {name: pd.read_sql(f"SELECT * FROM {name}", self.conn) for name in ("meta", "archs", "runs", "curves")}


def pack(path: Path, out: Path) -> dict[str, Any]:
    """Write a consistent gzipped copy of a table, even while a build is appending to it.

    SQLite's backup API copies a snapshot (whole runs only, whatever sits in the WAL
    included); the copy is folded into one file, gzipped next to ``out`` and moved into place,
    so ``out`` is either the old file or the new one.

    Args:
        path: The table (``.db``).
        out: The ``.db.gz`` to write.

    Returns:
        ``archs`` and ``runs`` in the copy, and its ``bytes``.

    Raises:
        ConfigError: ``path`` is not a readable table.
    """
    import os

    with BenchTable.open(path) as table:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=".db", prefix="rknas-pack-", dir=out.parent)
        os.close(fd)
        temp, gz = Path(name), Path(name + ".gz")
        try:
            dst = sqlite3.connect(temp)
            table.conn.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
            dst.execute("VACUUM")
            archs = dst.execute("SELECT count(*) FROM archs WHERE arch IN (SELECT arch FROM runs)").fetchone()[0]
            runs = dst.execute("SELECT count(*) FROM runs").fetchone()[0]
            dst.close()
            with open(temp, "rb") as src, gzip.open(gz, "wb", compresslevel=9) as z:
                shutil.copyfileobj(src, z)
            os.replace(gz, out)
        finally:
            temp.unlink(missing_ok=True)
            gz.unlink(missing_ok=True)
    return {"archs": int(archs), "runs": int(runs), "bytes": out.stat().st_size}


def _has_val_loss(conn: sqlite3.Connection) -> bool:
    return any(row[1] == "val_loss" for row in conn.execute("PRAGMA table_info(curves)"))


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn = sqlite3.connect(path, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "curves" in tables and not _has_val_loss(conn):  # a table from before val_loss was recorded
        with conn:
            conn.execute("ALTER TABLE curves ADD COLUMN val_loss REAL")
    return conn


def _fold_wal(conn: sqlite3.Connection) -> None:
    """Leave the file in rollback-journal mode: one file, no -wal beside it, readable read-only."""
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.OperationalError:  # read-only, or another build holds it: nothing to fold in
        pass


def _read_settings(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='settings'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: not a readable benchmark table ({exc}); give a file `rknas bench build` wrote, "
                          "whole") from None
    if row is None:
        raise ConfigError(f"{path}: not a benchmark table (no settings); give a file `rknas bench build` wrote")
    settings: dict[str, Any] = json.loads(row[0])
    return settings
