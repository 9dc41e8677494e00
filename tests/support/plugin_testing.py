"""Helpers for tests that register throwaway plugins (importable from any test directory).

The logic lives in the public ``rknas.testing``, which plugin authors use in their own tests.
"""

from rknas.testing import registered_plugins, temporary_plugin

__all__ = ["registered_plugins", "temporary_plugin"]
