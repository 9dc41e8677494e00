"""One trial: build the sampled network, check constraints, train it, report every epoch.

Independent of Ray so it can be tested and called directly; the searcher's trainable wraps
it. What it reports after each epoch (``outcome.EpochResult``) is the contract between a
trial and ``outcome.outcome_of``, which reads how the trial ended from the last report.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import torch

from rknas.config import NetworkConfig, TrainConfig
from rknas.data.core import TensorData
from rknas.errors import RknasError
from rknas.models.counting import count_flops, count_params
from rknas.models.network import build_network
from rknas.search.outcome import EpochResult, resource_reason
from rknas.search.space import SearchSpace
from rknas.train import fit, seed_everything
from rknas.util import default_device


class StopTrial(Exception):
    """Raised by a ``report`` callback to end a trial early (``run_trial`` lets it through)."""


def constraint_violation(space: SearchSpace, params: int, flops: int) -> Optional[str]:
    """Why a network breaks the space's size constraints, or None."""
    return space.constraints.violation(params, flops)


def run_trial(
    params: dict,
    space: SearchSpace,
    train: TensorData,
    val: TensorData,
    report: Callable[[EpochResult], None],
    device: str = "cpu",
    checkpoint: Optional[Path] = None,
) -> EpochResult:
    """Train one sampled configuration, calling ``report`` after each epoch.

    The trial's seed is set before the network is built, so its initial weights depend on
    its config and seed only, not on what ran before in the same worker.

    Args:
        params: The trial's parameters and constants, including ``seed``.
        space: The search space (for configs, fidelity and constraints).
        train: Training images.
        val: Validation images.
        report: Called with an ``EpochResult`` after each epoch (Ray Tune's ``report``).
        device: Where to train.
        checkpoint: Write the training state here after every epoch and continue from it
            if it exists (a trial restarted after its worker died; see ``train_trial``).

    Returns:
        The last result reported. A model that violates a constraint is reported once
        (epoch 0) and never trained. A loss that becomes non-finite is reported once more
        with ``diverged`` (see ``train_trial``). Any other error (a broken plugin) is
        reported as a result with ``failed`` and ``error``, so the study records the reason
        and the search goes on.
    """
    seed = int(params.get("seed", 0))
    try:
        network, training = space.configs(params, seed=seed)
    except Exception as exc:
        result: EpochResult = {"epoch": 0, "val_accuracy": 0.0, "failed": 1, "error": error_reason(exc)}
        report(result)
        return result
    return train_trial(network, training, space, train, val, report, device=device, checkpoint=checkpoint)


def train_trial(
    network: NetworkConfig,
    training: TrainConfig,
    space: SearchSpace,
    train: TensorData,
    val: TensorData,
    report: Callable[[EpochResult], None],
    device: str = "cpu",
    checkpoint: Optional[Path] = None,
) -> EpochResult:
    """Train one trial's configs, calling ``report`` after each epoch; what ``run_trial`` runs.

    Everything a trial's results depend on is set here, so that the stored configs (with
    ``training.seed``), device and thread count reproduce them whatever ran before in the
    same process: the seeds are set before the network is built (``fit`` seeds again
    before training), and on CUDA cuDNN is made deterministic (no benchmark autotuning).
    The thread count is the caller's (``torch.set_num_threads``) and is reported.

    Args:
        network: The trial's network config.
        training: The trial's training config; its ``seed`` seeds the trial.
        space: The search space (for its size constraints).
        train: Training images.
        val: Validation images.
        report: Called with an ``EpochResult`` after each epoch; may raise ``StopTrial``
            (or Ray Tune's stop) to end the trial, which propagates.
        device: Where to train.
        checkpoint: The training state after every epoch (``train.Checkpoint``); when the
            file exists the trial continues from it, exactly as if never stopped.

    Returns:
        The last result reported (see ``run_trial``). A non-finite loss (``fit`` raises
        FloatingPointError) ends the trial with a report at the epoch it happened in,
        ``val_accuracy`` 0.0 and ``diverged`` set to the message: the study records it as
        PRUNED, so the sampler learns to avoid the region instead of ignoring it.
    """
    t0 = time.perf_counter()
    base: EpochResult = {"epoch": 0, "val_accuracy": 0.0}
    where: EpochResult = {"device": torch.device(device).type, "threads": torch.get_num_threads()}
    if where["device"] == "cuda":
        # cuBLAS reads this when its handle is created: effective for the process's first CUDA trial.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        seed_everything(training.seed)
        model = build_network(network)
        n_params, n_flops = count_params(model), count_flops(model)
    except Exception as exc:
        result: EpochResult = {**base, "failed": 1, "error": error_reason(exc)}
        report(result)
        return result
    sizes: EpochResult = {"params": n_params, "flops": n_flops}
    violation = constraint_violation(space, n_params, n_flops)
    if violation:
        result = {**base, **sizes, "constraint_violation": violation}
        report(result)
        return result
    last: EpochResult = {**base, **sizes, **where}

    def on_epoch(epoch: int, metrics: dict) -> None:
        nonlocal last
        last = {**metrics, **sizes, **where, "wall_time": time.perf_counter() - t0}
        if str(device).startswith("cuda"):  # several trials may share a GPU: show each one's peak
            last["gpu_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        report(last)

    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)  # a reused worker keeps the last trial's peak
    try:
        fit(network, training, train, val, device=device, on_epoch=on_epoch, model=model, checkpoint=checkpoint,
            resume=checkpoint is not None)
    except Exception as exc:
        if _is_stop(exc):
            raise
        if isinstance(exc, FloatingPointError):
            # The epoch it diverged in did not finish: no losses, an accuracy below any trained network.
            result = {**sizes, **where, "epoch": int(last.get("epoch", 0)) + 1, "val_accuracy": 0.0,
                      "diverged": str(exc), "wall_time": time.perf_counter() - t0}
        else:
            result = {**last, "val_accuracy": 0.0, "failed": 1, "error": error_reason(exc)}
        report(result)
        return result
    return last


def _is_stop(exc: BaseException) -> bool:
    # Ray Tune ends a stopped trial by raising inside report(); let that through untouched.
    return isinstance(exc, StopTrial) or type(exc).__module__.startswith("ray.")


def error_reason(exc: BaseException) -> str:
    """Why a run failed, in one line: a full disk or memory said plainly, else the error with where it was raised.

    Args:
        exc: The exception training raised.

    Returns:
        The line a trial's or a benchmark run's record keeps.
    """
    if isinstance(exc, RknasError):
        return str(exc)
    plain = resource_reason(exc)
    if plain is not None:
        return plain
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first[:300]}{where}"


def prepare_worker(space_dict: dict, plugins: Optional[dict], cpus: float) -> SearchSpace:
    """What a Ray worker does before it trains (a search's trial, a benchmark's run): the same plugins as
    the driver whatever the worker's environment, threads for its CPU share, and the space.

    Args:
        space_dict: The space as JSON (``SearchSpace.model_dump(mode="json")``).
        plugins: The driver's plugin variables (``rknas.plugins.plugin_env()``), or None.
        cpus: The CPUs the worker holds.

    Returns:
        The space.
    """
    from rknas.plugins import apply_plugin_env

    if plugins is not None:
        apply_plugin_env(plugins)
    torch.set_num_threads(max(1, int(cpus)))
    return SearchSpace.model_validate(space_dict)


def pick_device(gpus: float) -> str:
    """CUDA when the trial holds a GPU share and one is visible, else the CPU."""
    return default_device() if gpus > 0 else "cpu"
