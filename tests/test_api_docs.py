"""Every public name of the library API has a Google-style docstring (Args/Returns/Raises)."""

import inspect

import pytest

import rknas
import rknas.search
import rknas.storage
from rknas import hookspecs
from rknas.strategies.base import StageStrategy

PUBLIC = [(m, n) for m in (rknas, rknas.search, rknas.storage) for n in m.__all__ if n not in ("hookimpl", "hookspec")]


def _returns_something(fn) -> bool:
    ann = inspect.signature(fn).return_annotation
    return ann not in (None, "None", inspect.Signature.empty)


CONSTANTS = {"__version__", "DEFAULT_STORAGE", "STORAGE_ENV", "FINISHED"}  # values, documented by their names and the README


def test_the_public_names_that_are_not_callables_are_the_known_constants():
    assert {n for m, n in PUBLIC if not callable(getattr(m, n))} == CONSTANTS


def _check_function(name, fn):
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 20, f"{name} has no docstring"
    params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
    if params:
        assert "Args:" in doc, f"{name}: no Args section"
    if _returns_something(fn):
        assert "Returns:" in doc, f"{name}: no Returns section"


CALLABLES = [(m, n) for m, n in PUBLIC if n not in CONSTANTS]


@pytest.mark.parametrize("module,name", CALLABLES, ids=[f"{m.__name__}.{n}" for m, n in CALLABLES])
def test_public_name_has_a_google_docstring(module, name):
    obj = getattr(module, name)
    if not inspect.isclass(obj):
        _check_function(name, obj)
        return
    assert len(inspect.getdoc(obj) or "") > 20, f"{name} has no docstring"
    # A class's own public methods (not inherited ones, nor properties) are API too.
    for attr, member in vars(obj).items():
        if not attr.startswith("_") and inspect.isfunction(member):
            _check_function(f"{name}.{attr}", member)


def test_hookspecs_and_the_strategy_contract_are_documented():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(fn, "rknas_spec"):
            assert "Args:" in (fn.__doc__ or ""), name
    assert "builder(channels, stages, width, dropout)" in (StageStrategy.__doc__ or "")
