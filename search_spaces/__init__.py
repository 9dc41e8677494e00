"""The search spaces shipped with rknas: this folder is the package ``rknas.search_spaces``.

``pyproject.toml`` maps it there, so the YAML files are package data of the wheel and of an
editable install alike; ``rknas.search.builtin_spaces`` reads them with importlib.resources.
"""
