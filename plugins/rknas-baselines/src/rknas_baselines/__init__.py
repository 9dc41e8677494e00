"""The RKCNN paper's comparison models (pre-act ResNet, RKNN, RK-Net, ODE-Net, DenseNet,
CliqueNet) as rknas stage strategies."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("rknas-baselines")
except PackageNotFoundError:  # imported from a source tree without install
    __version__ = "0.0.0+unknown"
