"""Data sets as in-memory uint8 tensors, split and augmented on the tensors themselves.

Small image data sets fit in memory (CIFAR-10 is 150 MB as uint8), so trials skip Python
data loaders entirely: batches are index slices, augmentation is batched tensor ops, and on
a GPU the whole set lives on the device.
"""

from typing import TYPE_CHECKING

from rknas._lazy import lazy_exports
from rknas.config import DataSpec
from rknas.data.download import download, ensure_dataset, list_datasets  # the function shadows its module's name, as always
from rknas.data.source import DataFacts, DataSource

if TYPE_CHECKING:
    from rknas.data.core import TensorData, augment, load_dataset, normalizer, split

# torch: imported the first time one of these is used
__getattr__, __dir__ = lazy_exports(__name__, {
    "rknas.data.core": ("TensorData", "augment", "load_dataset", "normalizer", "split"),
})

__all__ = [
    "DataFacts", "DataSource", "DataSpec", "TensorData", "augment", "download", "ensure_dataset", "list_datasets", "load_dataset",
    "normalizer", "split",
]
