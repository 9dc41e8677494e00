"""requirements/lock.txt: what `make` installs is what the suite passed with, and it agrees with pyproject.toml."""

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
sys.path.insert(0, str(REPO / "requirements"))
import lock as lockfile  # noqa: E402  (requirements/lock.py, the Makefile's helper)


def declared() -> list[Requirement]:
    """Every requirement of rknas (all extras) and of the bundled plugins."""
    out = []
    for pyproject in [REPO / "pyproject.toml", *sorted((REPO / "plugins").glob("*/pyproject.toml"))]:
        project = tomllib.loads(pyproject.read_text())["project"]
        reqs = [*project.get("dependencies", []), *(r for extra in project.get("optional-dependencies", {}).values() for r in extra)]
        out += [Requirement(r) for r in reqs]
    return [r for r in out if lockfile._norm(r.name) not in lockfile.EDITABLE]


def test_the_lock_pins_every_declared_requirement_within_its_range():
    pins = lockfile.pinned(LOCK)
    problems = []
    for req in declared():
        version = pins.get(lockfile._norm(req.name))
        if version is None:
            problems.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} is outside pyproject's {req}")
    assert not problems, "; ".join(problems) + ": run `make lock` to refresh requirements/lock.txt"


def test_the_lock_names_its_platform_and_make_uses_it_only_there(tmp_path):
    assert lockfile.lock_tag(LOCK) is not None
    other = tmp_path / "lock.txt"
    other.write_text("# platform: cp27-plan9-pdp11\nfoo==1.0\n")
    helper = [sys.executable, str(REPO / "requirements" / "lock.py")]
    proc = subprocess.run([*helper, "usable", str(other)], capture_output=True, text=True)
    assert proc.returncode == 1 and "cp27-plan9-pdp11" in proc.stderr and "make lock" in proc.stderr
    this = tmp_path / "this.txt"
    this.write_text(f"# platform: {lockfile.tag()}\n")
    assert subprocess.run([*helper, "usable", str(this)]).returncode == 0


def test_diff_names_each_version_that_differs(tmp_path):
    lock = tmp_path / "lock.txt"
    import pluggy

    lock.write_text(f"# platform: x\npluggy=={pluggy.__version__}.post99\nnot-a-real-package==1.0\n")
    out = subprocess.run([sys.executable, str(REPO / "requirements" / "lock.py"), "diff", str(lock)],
                         capture_output=True, text=True, check=True).stdout
    assert f"pluggy: {pluggy.__version__}.post99 -> {pluggy.__version__}" in out
    assert "not-a-real-package: 1.0 -> -" in out
