"""The installed version, readable without importing the rest of the package."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rknas")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"
