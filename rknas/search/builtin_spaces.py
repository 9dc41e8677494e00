"""Built-in plugin: the shipped search spaces, the package ``rknas.search_spaces``.

The YAML files stay in the repository's ``search_spaces/``; ``pyproject.toml`` maps that folder
to ``rknas.search_spaces``, so a wheel carries them as package data and an editable install
finds them in the source tree, both through importlib.resources.
"""

from importlib import resources
from pathlib import Path

from rknas.errors import RknasError
from rknas.hookspecs import hookimpl

SPACES_PACKAGE = "rknas.search_spaces"


def spaces_dir() -> Path:
    """The folder of the shipped search spaces, wherever rknas is installed.

    Returns:
        The folder of ``rknas.search_spaces``: in the wheel's install, or the repository's
        ``search_spaces/`` for an editable install.

    Raises:
        RknasError: ``rknas.search_spaces`` is not installed (an editable install made before
            it existed).
    """
    try:
        return Path(str(resources.files(SPACES_PACKAGE)))
    except ModuleNotFoundError:
        raise RknasError(f"the shipped search spaces ({SPACES_PACKAGE}) are not installed, as with an editable install "
                         "older than that package: run `pip install -e .` (or `make`) again") from None


@hookimpl
def register_search_spaces(register):
    register(spaces_dir())
