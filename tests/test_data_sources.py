"""A data source is one object: built-ins and plugin sets are `DataSource`s, listed, checked
and downloaded by the same code (no branches on names or kinds)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import rknas
from rknas.config import DataSpec
from rknas.data import DataSource, TensorData, download, ensure_dataset, list_datasets, load_dataset
from rknas.data.source import datasets
from rknas.errors import ConfigError, PluginError, RknasError

DATA = Path(rknas.__file__).parent / "data"
BUILTIN_NAMES = ["cifar10", "cifar100", "svhn", "mnist", "fashion_mnist", "digits", "image_folder"]
TOY_FILE = "toy.pt"


def load_toy(root, n=None):
    if not root or not (Path(root) / TOY_FILE).is_file():
        raise ConfigError(f"Toy not found under {root}")
    x, y = torch.load(Path(root) / TOY_FILE)
    return TensorData(x, y, 2), TensorData(x[:4], y[:4], 2)


def toy_present(root):
    return root is not None and (root / TOY_FILE).is_file()


class Fetches:
    """A fetch that writes the toy set into the folder it is given, and counts its calls."""

    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def __call__(self, root):
        self.calls.append(root)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g)
        (root / "sub").mkdir()
        (root / "sub" / "readme.txt").write_text("toy")
        torch.save((x, torch.arange(40) % 2), root / TOY_FILE)
        if self.fail:
            raise ValueError("the server went away")
        return ["https://example.invalid/toy.pt"]


def toy_source(fetch):
    return DataSource(
        name="toy", label="Toy", load=load_toy, fetch=fetch, present=toy_present,
        where=lambda root: [f"{root or 'ROOT'}/{TOY_FILE}"],
    )


def toy_plugin(source, space_dir=None):
    class ToyPlugin:
        __version__ = "1.2"

        @rknas.hookimpl
        def register_datasets(self, register):
            register(source)

        if space_dir is not None:
            @rknas.hookimpl
            def register_search_spaces(self, register):
                register(space_dir)

    return ToyPlugin()


# --- the type, the built-ins, registration ---------------------------------------------

def test_builtins_are_data_sources_registered_through_the_hook():
    found = datasets()
    assert list(found)[:len(BUILTIN_NAMES)] == BUILTIN_NAMES
    assert all(isinstance(s, DataSource) and s.package == "rknas" for s in found.values())
    assert [n for n, s in found.items() if s.downloadable] == BUILTIN_NAMES[:5]
    assert found["cifar10"].label == "CIFAR-10" and found["fashion_mnist"].label == "Fashion-MNIST"


def test_a_data_source_checks_its_fields():
    with pytest.raises(ValueError, match="has a fetch but no present check"):
        DataSource(name="x", load=load_toy, fetch=lambda root: None)
    with pytest.raises(ValueError, match="without commas or spaces"):
        DataSource(name="a b", load=load_toy)
    with pytest.raises(TypeError, match="load must be callable"):
        DataSource(name="x", load="not a function")
    assert DataSource(name="x", load=load_toy).label == "x"


def test_plugin_registers_a_data_source(register_plugin, tmp_path):
    register_plugin(toy_plugin(toy_source(Fetches())), name="toypkg")
    source = datasets()["toy"]
    assert source.provider == "toypkg 1.2" and source.label == "Toy"
    rows = {r["name"]: r for r in list_datasets(tmp_path)}
    assert rows["toy"] == {
        "name": "toy", "provider": "toypkg 1.2", "downloadable": True, "where": [f"{tmp_path}/{TOY_FILE}"],
        "present": False, "how": f"rknas data download toy --root {tmp_path}",
    }
    assert list(rows)[-1] == "toy"  # after the built-ins


def test_old_register_form_still_works_with_a_deprecation_warning(register_plugin, tmp_path):
    def loader(root, n=6):
        x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
        return TensorData(x, torch.arange(n) % 2, 2), TensorData(x[:2], torch.arange(2), 2)

    class OldPlugin:
        @rknas.hookimpl
        def register_datasets(self, register):
            register("old8", loader)

    register_plugin(OldPlugin(), name="oldpkg")
    with pytest.warns(DeprecationWarning, match=r"oldpkg: register\('old8', loader\) is deprecated; register a rknas.data.DataSource"):
        source = datasets()["old8"]
    assert isinstance(source, DataSource) and source.load is loader and source.fetch is None
    with pytest.warns(DeprecationWarning):
        train, _ = load_dataset(DataSpec(name="old8", options={"n": 10}))
        row = {r["name"]: r for r in list_datasets(tmp_path)}["old8"]
        with pytest.raises(RknasError, match=r"cannot download 'old8' \(nothing to download: provided by oldpkg; see oldpkg's"):
            download("old8", tmp_path, progress=False)
        assert ensure_dataset("old8", tmp_path) is None  # its loader reports what is missing
    assert len(train) == 10
    assert row == {"name": "old8", "provider": "oldpkg", "downloadable": False, "where": ["provided by oldpkg"],
                   "present": None, "how": "see oldpkg's documentation"}


def test_registering_something_else_is_a_plugin_error(register_plugin):
    class Bad:
        @rknas.hookimpl
        def register_datasets(self, register):
            register({"name": "x"})

    register_plugin(Bad(), name="badpkg")
    with pytest.raises(PluginError, match=r"plugin badpkg registered \{'name': 'x'\}, which is not a rknas.data.DataSource"):
        datasets()


def test_a_name_registered_twice_is_a_plugin_error(register_plugin):
    register_plugin(toy_plugin(DataSource(name="mnist", load=load_toy)), name="clash")
    with pytest.raises(PluginError, match=r"data set 'mnist' is registered twice: by rknas .* and by clash 1.2"):
        datasets()


# --- a plugin's fetch downloads like a built-in one --------------------------------------

def test_cli_downloads_a_plugin_set_with_its_fetch(register_plugin, tmp_path, cli):
    fetch = Fetches()
    register_plugin(toy_plugin(toy_source(fetch)), name="toypkg")
    root = tmp_path / "data"
    code, out, err = cli("data", "download", "toy", "--root", root)
    assert code == 0, err
    assert "Downloaded toy from https://example.invalid/toy.pt" in out and "2 files" in out
    assert str(root / TOY_FILE) in out and str(root / "sub" / "readme.txt") in out
    assert sorted(p.name for p in root.iterdir()) == ["sub", TOY_FILE]  # no temporary folder left
    assert fetch.calls[0].parent.parent == root  # it wrote into a temporary folder under the root
    train, test = load_dataset(DataSpec(name="toy", root=str(root)))
    assert len(train) == 40 and test.classes == 2
    code, out, _ = cli("data", "download", "toy", "--root", root)
    assert code == 0 and "toy is already in" in out and len(fetch.calls) == 1
    code, out, _ = cli("data", "list", "--json", "--root", root)
    row = {r["name"]: r for r in json.loads(out)}["toy"]
    assert row["present"] is True and row["downloadable"] is True
    code, _, err = cli("data", "download", "nope", "--root", root)
    assert code == 2 and "downloadable data sets: cifar10, cifar100, svhn, mnist, fashion_mnist, toy" in err


def test_a_failed_plugin_fetch_leaves_nothing(register_plugin, tmp_path):
    register_plugin(toy_plugin(toy_source(Fetches(fail=True))), name="toypkg")
    root = tmp_path / "new" / "data"
    with pytest.raises(RknasError, match="cannot download toy: the fetch of toypkg 1.2 failed: ValueError: the server went away"):
        download("toy", root, progress=False)
    assert not (tmp_path / "new").exists()


def test_a_fetch_that_misses_the_files_is_refused(register_plugin, tmp_path):
    register_plugin(toy_plugin(toy_source(lambda root: None)), name="toypkg")
    with pytest.raises(RknasError, match=f"downloaded toy, but its files are not where its loader looks: .*/{TOY_FILE}"):
        download("toy", tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_fetch_gets_the_options_it_declares(register_plugin, tmp_path, monkeypatch):
    seen = {}

    def fetch(root, *, mirror=None, timeout=1.0):
        seen.update(mirror=mirror, timeout=timeout)
        (root / TOY_FILE).write_bytes(b"")

    monkeypatch.setenv("RKNAS_DATA_MIRROR", "https://mirror.invalid/x")
    register_plugin(toy_plugin(toy_source(fetch)), name="toypkg")
    summary = download("toy", tmp_path, progress=False, timeout=7.0)
    assert seen == {"mirror": "https://mirror.invalid/x", "timeout": 7.0}
    assert summary["status"] == "downloaded" and summary["sources"] == []


def test_search_reports_and_downloads_a_missing_plugin_set(register_plugin, tmp_path, cli):
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "toy_space.yaml").write_text(
        "data: {name: toy}\nframework: cifar\narchitecture: {periods: 1, stages: 2, k: 8}\nfidelity: {epochs: 1}\n"
    )
    fetch = Fetches()
    register_plugin(toy_plugin(toy_source(fetch), spaces), name="toypkg")
    root = tmp_path / "data"
    storage = f"sqlite:///{tmp_path}/s.db"
    code, _, err = cli("search", "--space", "toy_space", "--storage", storage, "--data-root", root)
    assert code == 2 and f"Toy not found under {root}; download it with `rknas data download toy --root {root}`" in err
    assert not fetch.calls and not root.exists()
    code, _, err = cli("search", "--space", "toy_space", "--storage", storage)
    assert code == 2 and "Toy needs a root folder: set data.root or pass --data-root (and `rknas data download toy --root DIR`)" in err
    # --download fetches it with the plugin's fetch; the bad --address then stops the search before Ray starts.
    code, _, err = cli("search", "--space", "toy_space", "--storage", storage, "--data-root", root, "--download",
                       "--address", "nonsense")
    assert code == 2 and "is not HOST:PORT" in err, err
    assert len(fetch.calls) == 1 and (root / TOY_FILE).is_file()
    assert ensure_dataset(DataSpec(name="toy", root=str(root))) is None


# --- no import cycles inside rknas.data ----------------------------------------------------

def _imports(path: Path) -> set[str]:
    """The rknas.data modules ``path`` imports (anywhere but under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n.split(".")[2] for n in names if n.startswith("rknas.data.") and (DATA / f"{n.split('.')[2]}.py").is_file()}
    return out


def test_no_import_cycle_inside_rknas_data():
    modules = sorted(p.stem for p in DATA.glob("*.py") if p.stem != "__init__")
    graph = {m: _imports(DATA / f"{m}.py") - {m} for m in modules}
    assert graph["loaders"] >= {"source"} and "download" not in graph["loaders"]

    def visit(m, path):
        assert m not in path, f"import cycle: {' -> '.join(path + [m])}"
        for n in graph[m]:
            visit(n, path + [m])

    for m in modules:
        visit(m, [])


@pytest.mark.slow  # a fresh interpreter per module imports torch: about 8 s each on 2 cores
@pytest.mark.parametrize("module", sorted(p.stem for p in DATA.glob("*.py") if p.stem != "__init__"))
def test_each_rknas_data_module_imports_on_its_own(module):
    subprocess.run([sys.executable, "-c", f"import rknas.data.{module}"], check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("describe, why", [
    (lambda root: (40, 4), r"describe\(\) returned tuple, not rknas.data.DataFacts"),
    (lambda root: 1 / 0, "could not be described: ZeroDivisionError"),
    (lambda root: load_toy(root), "Toy not found under None"),  # the loader's own words pass through
])
def test_a_plugins_describe_is_checked_and_its_failures_are_one_line(register_plugin, describe, why):
    import dataclasses

    from rknas.data.source import describe_dataset

    register_plugin(toy_plugin(dataclasses.replace(toy_source(Fetches()), describe=describe)), name="toypkg")
    with pytest.raises(ConfigError, match=why) as err:
        describe_dataset(DataSpec(name="toy"))
    assert "\n" not in str(err.value)
    assert describe_dataset(DataSpec(name="cifar10")) is None  # no describe: the caller loads
