"""In-memory tensor data sets, splits and batched augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from rknas.config import DataSpec  # the schema lives torch-free
from rknas.errors import ConfigError


@dataclass
class TensorData:
    """Images as uint8 (N, C, H, W) and integer labels."""

    x: torch.Tensor
    y: torch.Tensor
    classes: int

    def __post_init__(self):
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(f"TensorData.x must be uint8 (N, C, H, W), got {self.x.dtype} {tuple(self.x.shape)}")
        self.y = self.y.long()
        if len(self.x) != len(self.y):
            raise ValueError("TensorData: x and y differ in length")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def in_channels(self) -> int:
        return self.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.x.shape[2]

    def subset(self, idx: torch.Tensor) -> TensorData:
        return TensorData(self.x[idx], self.y[idx], self.classes)

    def to(self, device) -> TensorData:
        return TensorData(self.x.to(device), self.y.to(device), self.classes)


def load_dataset(spec: DataSpec) -> tuple[TensorData, TensorData]:
    """(train, test) for a named data set from any plugin (built-ins included)."""
    from rknas.data.source import call_source, find_dataset

    source = find_dataset(spec.name)
    return call_source(source, source.load, spec, "loaded")


def split(train: TensorData, val_fraction: float, seed: int, subset: Optional[int] = None) -> tuple[TensorData, TensorData]:
    """A fixed-seed, class-stratified train/validation split of the training set."""
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    g = torch.Generator().manual_seed(seed)
    tr_idx, va_idx = [], []
    for c in range(train.classes):
        idx = (train.y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(len(idx) * val_fraction))
        va_idx.append(idx[:n_val])
        tr_idx.append(idx[n_val:])
    tr = torch.cat(tr_idx)
    tr = tr[torch.randperm(len(tr), generator=g)]
    if subset is not None:
        tr = tr[:subset]
    va = torch.cat(va_idx).sort().values
    return train.subset(tr), train.subset(va)


def normalizer(data: TensorData) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (on the 0-1 scale) of a training set."""
    x = data.x.float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean, std


def to_float(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = x.float().div_(255)
    return (x - mean.to(x.device)[:, None, None]) / std.to(x.device)[:, None, None]


def augment(x: torch.Tensor, crop_pad: int = 0, flip: bool = False, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random crop (zero padding ``crop_pad``) and horizontal flip of a batch, on its device."""
    n, c, h, w = x.shape
    dev = x.device
    if crop_pad > 0:
        p = crop_pad
        padded = F.pad(x, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chan = torch.arange(c, device=dev)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(dev)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x
