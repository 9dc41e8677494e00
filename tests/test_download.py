"""`rknas data download` end to end against a local HTTP server that serves torchvision's formats.

The files are tiny stand-ins in the exact formats (CIFAR python tar.gz, IDX .gz, SVHN .mat).
Their MD5 sums differ from the real ones, so each test patches torchvision's checksum
attributes; rknas itself uses torchvision's lists unchanged. Only 127.0.0.1 is contacted.
"""

import gzip
import hashlib
import http.server
import io
import pickle
import socket
import tarfile
import threading
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd

from rknas.config import DataSpec
from rknas.data.core import load_dataset
from rknas.data.download import download, ensure_dataset, list_datasets
from rknas.errors import ConfigError, RknasError


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any test that would open a URL outside 127.0.0.1."""
    monkeypatch.delenv("RKNAS_DATA_MIRROR", raising=False)
    real = urllib.request.urlopen

    def guarded(req, *args, **kwargs):
        url = req.full_url if isinstance(req, urllib.request.Request) else req
        assert urllib.parse.urlparse(url).hostname == "127.0.0.1", f"test tried to reach {url}"
        return real(req, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 serving that folder."""
    servers = []

    def start(folder: Path) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def left_under(root: Path) -> list:
    return sorted(p.relative_to(root) for p in root.rglob("*")) if root.exists() else []


# --- the formats -------------------------------------------------------------------------

CIFAR = {  # name -> (folder, train files, test file, meta file, label key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta", "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", 100),
}


def make_cifar(name: str, out: Path, monkeypatch, per_file: int = 3) -> dict:
    """A tiny python-version archive at out/<torchvision's file name>; patch torchvision's MD5s."""
    cls = getattr(tvd, "CIFAR10" if name == "cifar10" else "CIFAR100")
    folder, train_files, test_file, meta_file, label_key, classes = CIFAR[name]
    rng = np.random.default_rng(1)
    members, labels = {}, {"train": [], "test": []}
    for fname in train_files + [test_file]:
        y = [int(v) for v in rng.integers(0, classes, per_file)]
        labels["test" if fname == test_file else "train"] += y
        members[fname] = pickle.dumps({"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8), label_key: y})
    meta_key = "label_names" if name == "cifar10" else "fine_label_names"
    members[meta_file] = pickle.dumps({meta_key: [f"c{i}" for i in range(classes)]})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for fname, data in members.items():
            info = tarfile.TarInfo(f"{folder}/{fname}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.mkdir(parents=True, exist_ok=True)
    (out / cls.filename).write_bytes(buf.getvalue())
    sums = {fname: hashlib.md5(data).hexdigest() for fname, data in members.items()}
    monkeypatch.setattr(cls, "tgz_md5", md5(out / cls.filename))
    monkeypatch.setattr(cls, "train_list", [[f, sums[f]] for f in train_files])
    monkeypatch.setattr(cls, "test_list", [[test_file, sums[test_file]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": sums[meta_file]})
    return labels


def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes(), mtime=0)


def make_mnist(cls, out: Path, monkeypatch) -> dict:
    """The four IDX .gz files of an MNIST-like set in out/; patch torchvision's MD5s."""
    rng = np.random.default_rng(2)
    y_train, y_test = rng.integers(0, 10, 7), rng.integers(0, 10, 3)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (7, 28, 28)),
        "train-labels-idx1-ubyte.gz": y_train,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (3, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": y_test,
    }
    out.mkdir(parents=True, exist_ok=True)
    for fname, arr in arrays.items():
        (out / fname).write_bytes(idx_bytes(arr))
    assert [f for f, _ in cls.resources] == list(arrays)  # the names torchvision fetches
    monkeypatch.setattr(cls, "resources", [(f, md5(out / f)) for f in arrays])
    return {"train": y_train.tolist(), "test": y_test.tolist()}


def make_svhn(out: Path, monkeypatch) -> dict:
    import scipy.io

    rng = np.random.default_rng(3)
    out.mkdir(parents=True, exist_ok=True)
    y = {"train": np.array([[1], [10], [3], [4]]), "test": np.array([[10], [7]])}
    split_list = dict(tvd.SVHN.split_list)
    for split in ("train", "test"):
        url, fname, _ = split_list[split]
        n = len(y[split])
        scipy.io.savemat(out / fname, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": y[split]})
        split_list[split] = [url, fname, md5(out / fname)]
    monkeypatch.setattr(tvd.SVHN, "split_list", split_list)
    return {k: [0 if v == 10 else int(v) for v in arr.ravel()] for k, arr in y.items()}


# --- downloads that work -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_download_through_a_mirror_with_a_path_then_load(tmp_path, monkeypatch, serve, name):
    labels = make_cifar(name, tmp_path / "www" / "mirror" / "sub", monkeypatch)
    base = serve(tmp_path / "www")
    root = tmp_path / "data"
    summary = download(name, root, mirror=f"{base}/mirror/sub", progress=False)
    folder = CIFAR[name][0]
    assert summary["status"] == "downloaded"
    assert summary["sources"] == [f"{base}/mirror/sub/{getattr(tvd, name.upper()).filename}"]
    assert {Path(f["path"]).name for f in summary["files"]} == set(CIFAR[name][1]) | {CIFAR[name][2], CIFAR[name][3]}
    assert summary["bytes"] == sum((root / folder / f).stat().st_size for f in (root / folder).iterdir())
    assert {p.name for p in root.iterdir()} == {folder}  # no archive, no temporary folder
    train, test = load_dataset(DataSpec(name=name, root=str(root)))
    classes = CIFAR[name][5]
    assert train.x.shape == (len(labels["train"]), 3, 32, 32) and test.x.shape == (3, 3, 32, 32)
    assert train.y.tolist() == labels["train"] and test.y.tolist() == labels["test"] and train.classes == classes
    assert {r["name"]: r["present"] for r in list_datasets(root)}[name] is True
    # Already there and verified against the checksums: not fetched again (the server may be gone).
    again = download(name, root, mirror=f"http://127.0.0.1:{closed_port()}/", progress=False)
    assert again["status"] == "present" and again["bytes"] == summary["bytes"]


@pytest.mark.parametrize(
    "name, cls, folder", [("mnist", tvd.MNIST, "MNIST"), ("fashion_mnist", tvd.FashionMNIST, "FashionMNIST")]
)
def test_mnist_like_download_from_the_environment_mirror_then_load(tmp_path, monkeypatch, serve, name, cls, folder):
    labels = make_mnist(cls, tmp_path / "www", monkeypatch)
    base = serve(tmp_path / "www")
    monkeypatch.setenv("RKNAS_DATA_MIRROR", base)
    root = tmp_path / "data"
    summary = download(name, root, progress=False)
    assert summary["sources"] == [f"{base}/{f}" for f, _ in cls.resources]
    raw = root / folder / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f.removesuffix(".gz") for f, _ in cls.resources)
    assert {p.name for p in root.iterdir()} == {folder}
    train, test = load_dataset(DataSpec(name=name, root=str(root)))
    assert train.x.shape == (7, 1, 28, 28) and test.x.shape == (3, 1, 28, 28)
    assert train.y.tolist() == labels["train"] and test.y.tolist() == labels["test"]
    # torchvision reads the same layout, so the two agree on where the files are.
    assert cls(str(root), train=False).targets.tolist() == labels["test"]


def test_svhn_download_then_load(tmp_path, monkeypatch, serve):
    labels = make_svhn(tmp_path / "www", monkeypatch)
    base = serve(tmp_path / "www")
    root = tmp_path / "data"
    summary = download("svhn", root, mirror=base + "/", progress=False)
    assert summary["sources"] == [f"{base}/train_32x32.mat", f"{base}/test_32x32.mat"]
    assert {p.name for p in root.iterdir()} == {"train_32x32.mat", "test_32x32.mat"}
    train, test = load_dataset(DataSpec(name="svhn", root=str(root)))
    assert train.x.shape == (4, 3, 32, 32) and train.y.tolist() == labels["train"] == [1, 0, 3, 4]
    assert test.y.tolist() == labels["test"]


def test_a_stale_copy_is_replaced(tmp_path, monkeypatch, serve):
    make_cifar("cifar10", tmp_path / "www", monkeypatch)
    root = tmp_path / "data"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"half a file")
    assert download("cifar10", root, mirror=serve(tmp_path / "www"), progress=False)["status"] == "downloaded"
    assert len(load_dataset(DataSpec(name="cifar10", root=str(root)))[0]) == 15


# --- downloads that fail leave nothing -----------------------------------------------------

def test_http_404_is_one_line_and_leaves_nothing(tmp_path, serve):
    (tmp_path / "empty").mkdir()
    base = serve(tmp_path / "empty")
    root = tmp_path / "new" / "data"
    with pytest.raises(RknasError) as err:
        download("cifar10", root, mirror=base, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"cannot download cifar10 from {base}/cifar-10-python.tar.gz: HTTP 404")
    assert "--mirror" in msg and "\n" not in msg
    assert not (tmp_path / "new").exists()  # the folders it created are gone again


def test_closed_port_is_one_line_and_leaves_an_existing_root_as_it_was(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    mirror = f"http://127.0.0.1:{closed_port()}/"
    expected = r"cannot download mnist from http://127\.0\.0\.1:\d+/train-images-idx3-ubyte\.gz: .*refused"
    with pytest.raises(RknasError, match=expected) as err:
        download("mnist", root, mirror=mirror, progress=False)
    assert "\n" not in str(err.value)
    assert left_under(root) == [Path("keep.txt")]


def test_wrong_checksum_is_refused_with_torchvisions_real_md5(tmp_path, monkeypatch, serve):
    make_cifar("cifar10", tmp_path / "www", monkeypatch)
    monkeypatch.undo()  # the served archive no longer matches: torchvision's real checksum is back
    real = tvd.CIFAR10.tgz_md5
    assert real == "c58f30108f718f92721af3b95e74349a"
    root = tmp_path / "data"
    with pytest.raises(RknasError, match=f"where torchvision expects {real}"):
        download("cifar10", root, mirror=serve(tmp_path / "www"), progress=False)
    assert left_under(root) == []


def test_unknown_name_bad_mirror_and_unwritable_root(tmp_path):
    with pytest.raises(RknasError, match="downloadable data sets: cifar10, cifar100, svhn, mnist, fashion_mnist"):
        download("imagenet", tmp_path, progress=False)
    with pytest.raises(RknasError, match="inside scikit-learn"):
        download("digits", tmp_path, progress=False)
    with pytest.raises(RknasError, match="is not a URL"):
        download("mnist", tmp_path, mirror="127.0.0.1:8000", progress=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RknasError, match=f"cannot write to {blocker}/sub"):
        download("mnist", blocker / "sub", mirror="http://127.0.0.1:9/", progress=False)


# --- where things are looked for -----------------------------------------------------------

def test_missing_set_errors_name_the_download_command(tmp_path):
    from rknas.data.loaders import cifar10, mnist, svhn

    with pytest.raises(ConfigError, match=f"rknas data download mnist --root {tmp_path}"):
        mnist(str(tmp_path))
    with pytest.raises(ConfigError, match=f"rknas data download cifar10 --root {tmp_path}"):
        cifar10(str(tmp_path))
    with pytest.raises(ConfigError, match="rknas data download svhn --root DIR"):
        svhn(None)


def test_list_datasets_says_where_and_whether(tmp_path):
    rows = {r["name"]: r for r in list_datasets(tmp_path)}
    assert set(rows) >= {"digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "image_folder"}
    assert rows["digits"]["present"] is True and not rows["digits"]["downloadable"]
    assert rows["cifar10"]["where"] == [f"{tmp_path}/cifar-10-batches-py/"] and rows["cifar10"]["present"] is False
    assert rows["svhn"]["how"] == f"rknas data download svhn --root {tmp_path}"
    assert any("/usr/share/datasets/fashion-mnist" in w for w in rows["fashion_mnist"]["where"])
    (tmp_path / "cat").mkdir()
    assert {r["name"]: r for r in list_datasets(tmp_path)}["image_folder"]["present"] is True


def test_ensure_dataset(tmp_path, monkeypatch, serve):
    root = tmp_path / "data"
    assert ensure_dataset("digits", root) is None
    expected = f"MNIST not found under {root}; download it with `rknas data download mnist --root {root}`"
    with pytest.raises(ConfigError, match=expected):
        ensure_dataset(DataSpec(name="mnist", root=str(root)))
    make_mnist(tvd.MNIST, tmp_path / "www", monkeypatch)
    summary = ensure_dataset(DataSpec(name="mnist"), root, download=True, mirror=serve(tmp_path / "www"), progress=False)
    assert summary["status"] == "downloaded"
    assert ensure_dataset("mnist", root) is None  # there now


# --- the command line ----------------------------------------------------------------------

def test_cli_download_and_list(tmp_path, monkeypatch, serve, cli):
    import json

    make_mnist(tvd.MNIST, tmp_path / "www", monkeypatch)
    base = serve(tmp_path / "www")
    root = tmp_path / "data"
    code, out, err = cli("data", "download", "mnist", "--root", root, "--mirror", base + "/")
    assert code == 0, err
    assert f"Downloaded mnist from {base}/train-images-idx3-ubyte.gz" in out
    assert str(root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte") in out and "4 files" in out
    code, out, _ = cli("data", "download", "mnist", "--root", root, "--mirror", base + "/")
    assert code == 0 and "already in" in out
    code, out, _ = cli("data", "list", "--json", "--root", root)
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["mnist"]["present"] is True and rows["cifar10"]["present"] is False


def test_cli_errors_are_one_line_with_exit_2(tmp_path, serve, cli):
    (tmp_path / "empty").mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [
        (("data", "download", "imagenet", "--root", tmp_path / "d"), "downloadable data sets:"),
        (("data", "download", "svhn", "--root", blocker / "sub", "--mirror", "http://127.0.0.1:9/"), "cannot write to"),
        (("data", "download", "svhn", "--root", tmp_path / "d", "--mirror", serve(tmp_path / "empty")), "HTTP 404"),
    ]
    for args, expected in cases:
        code, out, err = cli(*args)
        assert code == 2 and expected in err, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "d").exists()
