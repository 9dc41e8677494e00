"""Load a script of benchmarks/ as a module, its training calls recorded."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_counting(name: str, monkeypatch: Any) -> Any:
    """``benchmarks/<name>.py`` as a module whose ``fit`` appends ``(network, epochs, images)`` to ``module.calls``."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.calls = []
    real = module.fit

    def counting_fit(network, cfg, train, *args, **kwargs):
        module.calls.append((network, cfg.epochs, len(train)))
        return real(network, cfg, train, *args, **kwargs)

    monkeypatch.setattr(module, "fit", counting_fit)
    return module
