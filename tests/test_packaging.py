"""The wheel: every package and every shipped search space is in it, and an installed copy finds them."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (REPO / "search_spaces").glob("*.yaml"))


def listed_packages() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_pyproject_lists_every_package_under_rknas():
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "rknas").rglob("__init__.py")}
    missing = found - set(listed_packages())
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml, or the wheel lacks them"
    assert "rknas.search_spaces" in listed_packages()


def test_editable_install_finds_the_shipped_spaces_in_the_repository():
    from rknas.search.builtin_spaces import spaces_dir
    from rknas.search.space import space_files

    assert spaces_dir() == REPO / "search_spaces"
    assert {n: space_files()[n][0] for n in SHIPPED} == {n: REPO / "search_spaces" / f"{n}.yaml" for n in SHIPPED}


INSTALLED_CHECK = """
import json, rknas
from rknas.search.space import load_space, space_files
found = {n: [str(f), pkg] for n, (f, pkg) in space_files().items()}
print(json.dumps({"rknas": rknas.__file__, "found": found,
                  "loaded": {n: load_space(n).name for n, (f, pkg) in found.items() if pkg == "rknas"}}))
"""


@pytest.mark.slow
def test_installed_wheel_lists_and_loads_every_shipped_space(tmp_path):
    src = tmp_path / "src"  # built from a copy: a build in the working tree leaves build/ behind
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("rknas", "search_spaces"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--no-cache-dir", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("rknas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"rknas/search_spaces/{n}.yaml" for n in SHIPPED} <= names
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True, cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"  # no ./search_spaces, no source tree on the path
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "RKNAS_PLUGINS": "", "RKNAS_PLUGIN_MODULES": ""}
    run = subprocess.run([sys.executable, "-c", INSTALLED_CHECK], capture_output=True, text=True, cwd=elsewhere, env=env)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert Path(got["rknas"]).is_relative_to(site), f"imported {got['rknas']}, not the installed copy"
    shipped = {n: v for n, v in got["found"].items() if v[1] == "rknas"}
    assert sorted(shipped) == SHIPPED
    assert all(Path(f).is_relative_to(site / "rknas" / "search_spaces") for f, _ in shipped.values())
    assert got["loaded"] == {n: n for n in SHIPPED}

    cli = subprocess.run([sys.executable, "-m", "rknas.cli", "spaces"], capture_output=True, text=True, cwd=elsewhere,
                         env={**env, "COLUMNS": "300"})
    assert cli.returncode == 0, cli.stderr
    assert all(n in cli.stdout for n in SHIPPED), cli.stdout
