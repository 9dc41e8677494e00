"""Built-in plugin: the data sets rknas reads itself, one ``DataSource`` each, in one place.

They are registered through the same hook as a plugin's sets, in this order (``rknas data
list`` shows them so). A torchvision set in a format rknas knows (CIFAR, SVHN, MNIST-like) is
one more entry here with its loader in ``rknas/data/loaders.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from rknas.data import loaders
from rknas.data.source import DataSource
from rknas.data.torchvision_sets import CifarSet, MnistSet, SvhnSet
from rknas.hookspecs import hookimpl


def _image_folder_where(root: Optional[Path]) -> list[str]:
    shown = str(root) if root else "ROOT"
    return [f"{shown}/<class>/*", f"or {shown}/train/<class>/* + {shown}/test/<class>/*"]


def _image_folder_present(root: Optional[Path]) -> bool:
    return bool(root and root.is_dir() and any(p.is_dir() for p in root.iterdir()))


SOURCES: tuple[DataSource, ...] = (
    CifarSet("cifar10", "CIFAR10").source("CIFAR-10", loaders.cifar10),
    CifarSet("cifar100", "CIFAR100").source("CIFAR-100", loaders.cifar100),
    SvhnSet("svhn", "SVHN").source("SVHN", loaders.svhn),
    MnistSet("mnist", "MNIST").source("MNIST", loaders.mnist, describe=loaders.mnist_facts),
    MnistSet("fashion_mnist", "FashionMNIST", default_root=loaders.FASHION_MNIST_DEBIAN).source(
        "Fashion-MNIST", loaders.fashion_mnist, how="apt install dataset-fashion-mnist", describe=loaders.fashion_mnist_facts
    ),
    DataSource(
        name="digits", label="digits", load=loaders.digits, where=lambda root: ["inside scikit-learn"],
        present=lambda root: importlib.util.find_spec("sklearn") is not None,
        how="pip install scikit-learn", describe=loaders.digits_facts,
    ),
    DataSource(
        name="image_folder", label="image folder", load=loaders.image_folder, where=_image_folder_where,
        present=_image_folder_present, how="your own images, a sub-folder per class",
    ),
)


@hookimpl
def register_datasets(register):
    for source in SOURCES:
        register(source)
