"""Errors a user can act on. The CLI prints them as one line and exits 2."""


class RknasError(Exception):
    """Bad input or environment; the message says what is wrong and how to fix it."""


class ConfigError(RknasError):
    """A network, search-space or training configuration is invalid."""


class PluginError(RknasError):
    """A plugin broke its contract; the message names the strategy and its package."""
