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


@pytest.mark.parametrize("module,name", PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC])
def test_public_name_has_a_google_docstring(module, name):
    obj = getattr(module, name)
    if not callable(obj):
        return  # constants (__version__, DEFAULT_STORAGE) document themselves by name
    doc = inspect.getdoc(obj) or ""
    assert len(doc) > 20, f"{name} has no docstring"
    if inspect.isclass(obj):
        return
    params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
    if params:
        assert "Args:" in doc, f"{name}: no Args section"
    if _returns_something(obj):
        assert "Returns:" in doc, f"{name}: no Returns section"


def test_hookspecs_and_the_strategy_contract_are_documented():
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(fn, "rknas_spec"):
            assert "Args:" in (fn.__doc__ or ""), name
    assert "builder(channels, stages, width, dropout)" in (StageStrategy.__doc__ or "")
