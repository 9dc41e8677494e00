"""The lock of the exact versions the whole test suite passed with, and the checks around it.

``make`` installs ``requirements/lock.txt`` (every package, pinned) when this machine's Python
and platform match the ones it was made on, and the ranges of ``pyproject.toml`` otherwise.
``make lock`` refreshes it from ``.venv-latest`` after the suite passed there (``make test-latest``).

Usage (the Makefile's calls):
    python requirements/lock.py tag                 # this interpreter's tag, e.g. cp311-linux-x86_64
    python requirements/lock.py usable LOCK         # exit 0 if LOCK was made for this tag
    python requirements/lock.py diff LOCK           # installed versions against LOCK, one line each
    python requirements/lock.py write LOCK          # LOCK from this interpreter's environment
"""

from __future__ import annotations

import datetime
import platform
import sys
from importlib import metadata
from pathlib import Path

HEADER = "# platform: "
EDITABLE = {"rknas", "rknas-baselines", "rknas-template"}  # this repository's own packages


def tag() -> str:
    return f"cp{sys.version_info[0]}{sys.version_info[1]}-{sys.platform}-{platform.machine()}"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def pinned(lock: Path) -> dict[str, str]:
    out = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[_norm(name)] = version.strip()
    return out


def installed() -> dict[str, str]:
    found = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    return {n: v for n, v in found.items() if n not in EDITABLE}


def lock_tag(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(HEADER):
            return line[len(HEADER):].strip()
    return None


def main(argv: list[str]) -> int:
    if argv[:1] == ["tag"]:
        print(tag())
        return 0
    if len(argv) != 2 or argv[0] not in ("usable", "diff", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    command, lock = argv[0], Path(argv[1])
    if command == "usable":
        made_for = lock_tag(lock) if lock.exists() else None
        if made_for != tag():
            print(f"{lock} was made for {made_for}, this is {tag()}: installing the ranges of pyproject.toml "
                  "(untested versions; `make lock` makes a lock for this machine)", file=sys.stderr)
            return 1
        return 0
    if command == "diff":
        want, have = pinned(lock), installed()
        rows = [f"{n}: {want.get(n, '-')} -> {have.get(n, '-')}" for n in sorted(set(want) | set(have))
                if want.get(n) != have.get(n) and n not in ("pip", "setuptools", "wheel")]
        print("\n".join(rows) if rows else f"same versions as {lock}")
        return 0
    have = installed()
    lines = [
        "# The exact versions the whole test suite (`make test`) passed with. Made by `make lock`,",
        "# which builds .venv-latest from pyproject.toml's ranges, runs the suite there, then writes",
        "# this file from it. `make` installs it when the platform below matches.",
        f"{HEADER}{tag()}",
        f"# written: {datetime.date.today().isoformat()}",
        *(f"{n}=={v}" for n, v in sorted(have.items())),
    ]
    lock.write_text("\n".join(lines) + "\n")
    print(f"wrote {lock}: {len(have)} packages for {tag()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
