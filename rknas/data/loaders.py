"""The built-in loaders: data sets read from files already on disk.

`rknas data download` fetches the files (rknas.data.download); rknas/data/builtin.py makes each
loader a ``DataSource``. torch is imported inside the loaders, when a set is loaded: registering,
listing and checking the sources (``rknas strategies``, ``rknas data list``) import none.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np

from rknas.data.source import DataFacts, download_command
from rknas.errors import ConfigError

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
DIGITS_IMAGES = 1797  # scikit-learn's load_digits (its documentation); describe's claim is checked on load


def digits(root: Optional[str] = None, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's 8x8 digits (1,797 images, inside the wheel). A fixed 20% is the test set."""
    import torch
    from sklearn.datasets import load_digits

    from rknas.data.core import TensorData

    d = load_digits()
    x = torch.from_numpy((d.images * 16).clip(0, 255).astype(np.uint8))[:, None]
    y = torch.from_numpy(d.target)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    n_test = _digits_test(len(y), test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    return TensorData(x[tr], y[tr], 10), TensorData(x[te], y[te], 10)


def _digits_test(n: int, test_fraction: float) -> int:
    return int(round(n * test_fraction))


def digits_facts(root: Optional[str] = None, test_fraction: float = 0.2, seed: int = 0) -> DataFacts:
    """``digits``' sizes without importing scikit-learn (1.7 s) or torch."""
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:
        raise ConfigError("data set 'digits' needs scikit-learn: pip install scikit-learn")
    n_test = _digits_test(DIGITS_IMAGES, test_fraction)
    return DataFacts(DIGITS_IMAGES - n_test, n_test, 1, 8, 10)


def _idx_dims(path: Path) -> tuple[int, ...]:
    """An IDX file's dimensions from its header alone (the file may be gzipped)."""
    with (gzip.open(path) if path.suffix == ".gz" else path.open("rb")) as f:
        head = f.read(4)
        if len(head) < 4:
            raise ConfigError(f"{path} is not an IDX file (it is shorter than its header)")
        return tuple(int(d) for d in np.frombuffer(f.read(4 * head[3]), dtype=">i4"))


def _read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_files(root: Path, dataset_dir: str) -> Optional[dict]:
    names = {
        "train_x": "train-images-idx3-ubyte",
        "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte",
        "test_y": "t10k-labels-idx1-ubyte",
    }
    for folder in (root, root / dataset_dir / "raw", root / dataset_dir):
        found = {}
        for key, stem in names.items():
            for cand in (folder / stem, folder / f"{stem}.gz"):
                if cand.is_file():
                    found[key] = cand
                    break
        if len(found) == 4:
            return found
    return None


def _mnist_like(root: Optional[str], name: str, dataset_dir: str, label: str, default: Optional[Path] = None):
    import torch

    from rknas.data.core import TensorData

    files = _mnist_files(root, name, dataset_dir, label, default)
    x_tr, y_tr, x_te, y_te = (_read_idx(files[k]) for k in ("train_x", "train_y", "test_x", "test_y"))
    t = lambda a: torch.from_numpy(a.copy())  # noqa: E731
    return TensorData(t(x_tr)[:, None], t(y_tr), 10), TensorData(t(x_te)[:, None], t(y_te), 10)


def _mnist_like_facts(root: Optional[str], name: str, dataset_dir: str, label: str,
                      default: Optional[Path] = None) -> DataFacts:
    files = _mnist_files(root, name, dataset_dir, label, default)
    train, test = _idx_dims(files["train_x"]), _idx_dims(files["test_x"])
    if len(train) != 3 or train[1] != train[2]:
        raise ConfigError(f"{files['train_x']}: expected square grey images (N, H, H), its header says {train}")
    return DataFacts(train[0], test[0], 1, train[1], 10)


def _mnist_files(root: Optional[str], name: str, dataset_dir: str, label: str, default: Optional[Path]) -> dict:
    """The four IDX files under ``root`` (or ``default``), or the error that says where they were looked for."""
    candidates = [Path(root).expanduser()] if root else ([default] if default else [])
    for base in candidates:
        files = _idx_files(base, dataset_dir)
        if files:
            return files
    where = root or "(no root given)"
    raise ConfigError(
        f"{label} not found under {where}: expected the IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (optionally .gz) in ROOT, ROOT/{dataset_dir}/raw "
        f"(torchvision's layout) or ROOT/{dataset_dir}; set data.root in the space or pass --data-root, "
        f"or download it: {download_command(name, root)}"
    )


def mnist(root: Optional[str] = None):
    return _mnist_like(root, "mnist", "MNIST", "MNIST")


def fashion_mnist(root: Optional[str] = None):
    """Fashion-MNIST; Debian's dataset-fashion-mnist package is found without a root."""
    return _mnist_like(root, "fashion_mnist", "FashionMNIST", "Fashion-MNIST", default=FASHION_MNIST_DEBIAN)


def mnist_facts(root: Optional[str] = None) -> DataFacts:
    """``mnist``'s sizes from the IDX headers."""
    return _mnist_like_facts(root, "mnist", "MNIST", "MNIST")


def fashion_mnist_facts(root: Optional[str] = None) -> DataFacts:
    """``fashion_mnist``'s sizes from the IDX headers."""
    return _mnist_like_facts(root, "fashion_mnist", "FashionMNIST", "Fashion-MNIST", default=FASHION_MNIST_DEBIAN)


def _torchvision(name: str, cls_name: str, label: str, fmt: str, root: Optional[str], **kw):
    import torch
    import torchvision.datasets as tvd

    from rknas.data.core import TensorData

    if not root:
        raise ConfigError(
            f"{label} needs a root folder holding {fmt}; set data.root in the space or pass --data-root "
            f"(to download it: {download_command(name)})"
        )
    cls = getattr(tvd, cls_name)
    try:
        if cls_name == "SVHN":
            tr, te = cls(root, split="train", download=False), cls(root, split="test", download=False)
        else:
            tr, te = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        raise ConfigError(
            f"{label} not found in {root}: expected {fmt} (torchvision's format): {exc}; "
            f"to download it: {download_command(name, root)}"
        ) from None

    def conv(ds):
        if cls_name == "SVHN":
            x, y = torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64))
        else:
            x, y = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)
        return TensorData(x, y, len(ds.classes) if hasattr(ds, "classes") else 10)

    return conv(tr), conv(te)


def cifar10(root: Optional[str] = None):
    return _torchvision("cifar10", "CIFAR10", "CIFAR-10", "ROOT/cifar-10-batches-py/ (the python version)", root)


def cifar100(root: Optional[str] = None):
    return _torchvision("cifar100", "CIFAR100", "CIFAR-100", "ROOT/cifar-100-python/ (the python version)", root)


def svhn(root: Optional[str] = None):
    return _torchvision("svhn", "SVHN", "SVHN", "ROOT/train_32x32.mat and ROOT/test_32x32.mat", root)


def image_folder(
    root: Optional[str] = None, image_size: int = 32, grayscale: bool = False, test_fraction: float = 0.2, seed: int = 0
):
    """A folder of class sub-folders (torchvision ImageFolder); ROOT/train and ROOT/test if both exist."""
    import torch
    import torchvision.transforms.v2 as T
    from torchvision.datasets import ImageFolder

    from rknas.data.core import TensorData

    if not root or not Path(root).is_dir():
        raise ConfigError(f"image folder {root!r} does not exist; expected ROOT/<class>/<image> or ROOT/train/<class>/...")
    tf = T.Compose([T.Grayscale() if grayscale else T.RGB(), T.Resize((image_size, image_size)), T.PILToTensor()])

    def read(folder):
        ds = ImageFolder(folder, transform=tf)
        x = torch.stack([ds[i][0] for i in range(len(ds))])
        return TensorData(x, torch.tensor(ds.targets), len(ds.classes))

    base = Path(root)
    if (base / "train").is_dir() and (base / "test").is_dir():
        return read(base / "train"), read(base / "test")
    data = read(base)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=g)
    n_test = int(round(len(data) * test_fraction))
    return data.subset(perm[n_test:]), data.subset(perm[:n_test])

