"""One trial: build the sampled network, check constraints, train it, report every epoch.

Independent of Ray so it can be tested and called directly; the runner wraps it.
"""

from __future__ import annotations

import time
import traceback
from typing import Callable

import torch

from rknas.data.core import TensorData
from rknas.errors import RknasError
from rknas.models.counting import count_flops, count_params
from rknas.models.network import build_network
from rknas.search.space import SearchSpace
from rknas.train import fit


def constraint_violation(space: SearchSpace, params: int, flops: int) -> str | None:
    c = space.constraints
    if c.max_params is not None and params > c.max_params:
        return f"params {params:,} > max_params {int(c.max_params):,}"
    if c.max_flops is not None and flops > c.max_flops:
        return f"FLOPs {flops:,} > max_flops {int(c.max_flops):,}"
    return None


def run_trial(
    params: dict,
    space: SearchSpace,
    train: TensorData,
    val: TensorData,
    report: Callable[[dict], None],
    device: str = "cpu",
) -> dict:
    """Train one sampled configuration, calling ``report`` after each epoch.

    A model that violates a constraint is reported once (epoch 0) and never trained. Any
    error (a broken plugin, divergence) is reported as a result with ``failed`` and ``error``,
    so the study records the reason and the search goes on.
    """
    t0 = time.perf_counter()
    seed = int(params.get("seed", 0))
    base = {"epoch": 0, "val_accuracy": 0.0}
    try:
        network, training = space.configs(params, seed=seed)
        model = build_network(network)
        n_params, n_flops = count_params(model), count_flops(model)
    except Exception as exc:
        result = {**base, "failed": 1, "error": _reason(exc)}
        report(result)
        return result
    sizes = {"params": n_params, "flops": n_flops}
    violation = constraint_violation(space, n_params, n_flops)
    if violation:
        result = {**base, **sizes, "constraint_violation": violation}
        report(result)
        return result
    last = {**base, **sizes}

    def on_epoch(epoch: int, metrics: dict) -> None:
        nonlocal last
        last = {**metrics, **sizes, "wall_time": time.perf_counter() - t0}
        report(last)

    try:
        fit(network, training, train, val, device=device, on_epoch=on_epoch, model=model)
    except Exception as exc:
        if _is_stop(exc):
            raise
        result = {**last, "val_accuracy": 0.0, "failed": 1, "error": _reason(exc)}
        report(result)
        return result
    return last


def _is_stop(exc: BaseException) -> bool:
    # Ray Tune ends a stopped trial by raising inside report(); let that through untouched.
    return type(exc).__module__.startswith("ray.")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RknasError):
        return str(exc)
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"


def pick_device(gpus: float) -> str:
    return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
