"""Rules of the code base that a reviewer would otherwise have to remember."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rknas"
BROAD = {"Exception", "BaseException"}


def silenced_broad_handlers(source: str) -> list[int]:
    """Lines of ``except:`` / ``except Exception:`` (or BaseException) whose body only passes or continues."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ExceptHandler):
            continue
        caught = node.type
        names = {e.id for e in caught.elts if isinstance(e, ast.Name)} if isinstance(caught, ast.Tuple) else (
            {caught.id} if isinstance(caught, ast.Name) else set())
        silent = all(isinstance(s, (ast.Pass, ast.Continue)) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                     for s in node.body)
        if silent and (caught is None or names & BROAD):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("source,found", [
    ("try:\n    x()\nexcept Exception:\n    pass\n", [3]),
    ("try:\n    x()\nexcept:\n    ...\n", [3]),
    ("for a in b:\n    try:\n        x()\n    except (OSError, BaseException):\n        continue\n", [4]),
    ("try:\n    x()\nexcept OSError:\n    pass  # the file may be gone: nothing to clean\n", []),
    ("try:\n    x()\nexcept Exception as exc:\n    log(exc)\n", []),
])
def test_the_check_finds_silenced_broad_handlers(source, found):
    assert silenced_broad_handlers(source) == found


def test_no_broad_exception_is_silenced_in_rknas():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
             for line in silenced_broad_handlers(path.read_text())]
    assert not found, f"catch the specific exception and say why it is safe to ignore: {found}"


MAX_FUNCTION_LINES = 100


def test_no_function_in_rknas_is_over_100_lines():
    """Long functions mix phases; split them (issue 16: evaluate, the Tune adapter and fit were)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


# Reading a space, a study or an exported config must not pay for torch (issue 26): the schemas
# and the study queries are pinned torch-free here, each in a fresh interpreter.
TORCH_FREE = ("rknas.config", "rknas.options", "rknas.storage", "rknas.storage.trial_storage", "rknas.registry",
              "rknas.search.space", "rknas.strategies", "rknas.data", "rknas.display", "rknas.cli")


def test_the_config_schemas_and_the_study_queries_import_no_torch():
    import subprocess
    import sys

    code = f"import sys; import {', '.join(TORCH_FREE)}; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_no_assertion_in_the_tests_is_made_to_pass_whatever_happens():
    """``assert ... or True`` checks nothing (issue 26 found one): a test asserts what could fail."""
    import re

    here = Path(__file__).parent
    found = [f"{p.name}:{n}" for p in sorted(here.rglob("*.py")) for n, line in enumerate(p.read_text().splitlines(), 1)
             if p.name != "test_code_rules.py" and re.search(r"\bassert\b.*\bor\s+True\b", line)]
    assert not found, found


def _rknas_imports(path: Path, modules: set[str], name: str) -> set[str]:
    """The rknas modules a module imports, at its top or inside functions (not under TYPE_CHECKING)."""
    found: set[str] = set()

    class Imports(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                for n in node.orelse:
                    self.visit(n)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.startswith("rknas"))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and node.module.startswith("rknas"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)

    Imports().visit(ast.parse(path.read_text()))
    resolved = set()
    for m in found:
        while m and m not in modules:
            m = m.rpartition(".")[0]
        # Importing a.b.c runs a's and a.b's __init__ too: those packages are imported as well,
        # except the ones this module is inside (they are already being imported).
        parts = m.split(".")
        for i in range(1, len(parts) + 1):
            package = ".".join(parts[:i])
            if package in modules and package != name and not name.startswith(package + "."):
                resolved.add(package)
    return resolved


def import_cycles(package: Path) -> list[list[str]]:
    """Groups of rknas modules that import each other, directly or around a loop (Tarjan's algorithm)."""
    paths = {}
    for p in package.rglob("*.py"):
        parts = p.relative_to(package.parent).with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {n: _rknas_imports(p, set(paths), n) for n, p in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles_in_rknas_counting_imports_inside_functions():
    assert import_cycles(PACKAGE) == []


def package(root: Path, files: dict[str, str]) -> Path:
    """A throwaway ``rknas`` package under ``root``: {relative path: source}."""
    for name, source in {"__init__.py": "", **files}.items():
        (root / "rknas" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "rknas" / name).write_text(source)
    return root / "rknas"


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    pkg = package(tmp_path, {
        "a/__init__.py": "",
        "a/x.py": "def f():\n    from rknas.b import y\n",
        "b.py": "from rknas.a.x import f\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rknas.c\n",
        "c.py": "import rknas.b\n",  # b imports c only for type checkers: no cycle
    })
    assert import_cycles(pkg) == [["rknas.a.x", "rknas.b"]]


def test_the_cycle_finder_counts_the_packages_an_import_runs(tmp_path):
    """`from rknas.d.e import f` runs rknas/d/__init__.py, which may import its way back."""
    pkg = package(tmp_path, {
        "d/__init__.py": "from rknas.d.g import h\n",
        "d/e.py": "f = 1\n",
        "d/g.py": "def h():\n    from rknas.r import x\n",
        "r.py": "from rknas.d.e import f\nx = f\n",
    })
    assert import_cycles(pkg) == [["rknas.d", "rknas.d.g", "rknas.r"]]
