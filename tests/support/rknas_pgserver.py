"""A private PostgreSQL server for the tests: initdb + pg_ctl in a temp folder, on 127.0.0.1.

Uses Debian's server binaries (package ``postgresql``; ``make venv`` installs it when missing).
PostgreSQL refuses to run as root, so under root the server runs as ``nobody``. Trust
authentication is fine here: the server listens on loopback only, on a port of its own, and
lives as long as the test session.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Optional

SERVICE_USER = "nobody"


def server_bin() -> Optional[Path]:
    """The folder with initdb and pg_ctl (Debian's newest version first), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]), reverse=True)
    if found:
        return Path(found[0]).parent
    which = shutil.which("initdb")
    return Path(which).resolve().parent if which else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One server; ``url(database)`` gives SQLAlchemy URLs, ``create_database()`` fresh databases."""

    def __init__(self) -> None:
        bindir = server_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server binaries (initdb, pg_ctl) are missing: run `make venv`, "
                               "which installs Debian's postgresql, or `apt-get install -y postgresql`")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="rknas-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, SERVICE_USER)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", SERVICE_USER, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=self.root, timeout=120)

    def start(self) -> PostgresServer:
        """initdb, then start on a free loopback port (a few tries: the port may be taken meanwhile)."""
        out = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "-N")
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stderr[-1000:]}")
        for _ in range(5):
            self.port = _free_port()
            out = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", self._opts(),
                            "start")
            if out.returncode == 0:
                return self
        log = (self.root / "log").read_text()[-1000:] if (self.root / "log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {out.stderr[-500:]} {log}")

    def _opts(self) -> str:
        return f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c max_connections=200"

    def halt(self) -> None:
        """Stop the server as an operator would for a restart (fast shutdown: sessions are ended); files kept."""
        out = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        if out.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {out.stderr[-500:]}")

    def resume(self) -> None:
        """Start the halted server again, on the same port."""
        out = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", self._opts(),
                        "start")
        if out.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {out.stderr[-500:]}")

    def stop(self) -> None:
        """Stop the server and delete its files."""
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3, SQLAlchemy's default for ``postgresql://``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)
