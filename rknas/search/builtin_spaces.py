"""Built-in plugin: the search spaces shipped in the repository's ``search_spaces/``."""

from pathlib import Path

from rknas.hookspecs import hookimpl

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"


@hookimpl
def register_search_spaces(register):
    if SPACES_DIR.is_dir():
        register(SPACES_DIR)
