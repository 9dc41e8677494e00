"""Verbatim copy of plugins/rknas-template before BlockSpec (only the package renamed): a plugin from the old guide.

Template rknas plugin: one stage strategy, ``heun``."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("rknas-template")
except PackageNotFoundError:  # imported from a source tree without install
    __version__ = "0.0.0+unknown"
