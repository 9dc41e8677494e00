"""Package namespaces that import their modules on first use (PEP 562).

A package ``__init__`` that imported all its modules would make every submodule import pay
for all of them: importing ``rknas.storage.retry`` would load SQLAlchemy and Optuna's whole
storage, ``rknas.data.source`` would load torch. Each package instead names where its exports
live; a name is imported the first time it is used (``from rknas.storage import open_study``
works as before). The packages repeat the names under ``TYPE_CHECKING`` for type checkers.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, Iterable[str]]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` for the names its modules export.

    Args:
        package: The package's ``__name__``.
        modules: Module name -> the names it exports through the package.

    Returns:
        ``(__getattr__, __dir__)``, to assign in the package's ``__init__``.
    """
    where = {name: module for module, names in modules.items() for name in names}
    clash = sorted(set(where) & {m.rsplit(".", 1)[-1] for m in modules})
    if clash:  # importing the submodule would set the package attribute to the module, hiding the name
        raise ValueError(f"{package}: {', '.join(clash)} is both a submodule and a lazy export; import it eagerly")

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
