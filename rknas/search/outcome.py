"""How a trial ends, as types: what it reports each epoch, and the one way it ended.

A trial reports an ``EpochResult`` after every epoch (through Ray Tune, so as a plain dict).
When it ends, ``outcome_of`` reads its last report into exactly one ``Outcome``, and
``optuna_state`` maps that outcome to the state, values and record fields the study keeps,
in one ``match``. The measurements a trial reports (``Measurements``) are the trial-record
fields of the same names: ``MEASUREMENTS`` is the list the record copies, so a new
measurement is one line here and one field in ``TrialRecord``.
"""

from __future__ import annotations

import errno
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional, TypedDict, Union

from optuna.trial import TrialState

WORKER_CRASHED = "the trial's worker crashed (see the Ray logs)"

Values = Union[float, list[float], None]


class Measurements(TypedDict, total=False):
    """What a trial measured: recorded in ``TrialRecord`` under the same names.

    ``device`` and ``threads`` say where it trained, which is what, with its configs and
    seed, reproduces it; ``gpu_memory_mib`` is the peak GPU memory (CUDA only).
    ``table_run`` names the table run that answered a trial of a table-backed search
    (``--table``), which trained nothing.
    """

    params: int
    flops: int
    wall_time: float
    val_loss: float
    train_loss: float
    device: str
    threads: int
    gpu_memory_mib: float
    table_run: str


class EpochResult(Measurements, total=False):
    """What a trial reports: after each epoch, and once more when it ends early.

    ``epoch`` 0 means nothing was trained. ``failed``/``error`` mark an error inside the
    trial; ``constraint_violation`` a network over a size limit; ``diverged`` a loss that
    became non-finite during epoch ``epoch`` (reported with ``val_accuracy`` 0.0, below any
    trained network).
    """

    epoch: int
    val_accuracy: float
    failed: int
    error: str
    constraint_violation: str
    diverged: str


MEASUREMENTS: tuple[str, ...] = tuple(Measurements.__annotations__)


@dataclass(frozen=True)
class Completed:
    """Trained for the whole fidelity; ``values`` in the order of the space's objectives."""

    values: list[float]


@dataclass(frozen=True)
class Pruned:
    """Stopped early by the scheduler (ASHA) after ``at_epoch`` epochs."""

    at_epoch: int


@dataclass(frozen=True)
class OverLimit:
    """Larger than the space's size limits: never trained."""

    reason: str


@dataclass(frozen=True)
class Diverged:
    """The training loss became non-finite; ``reason`` is ``fit``'s message."""

    reason: str


@dataclass(frozen=True)
class Failed:
    """An error inside the trial (a broken plugin, a non-finite objective)."""

    reason: str


@dataclass(frozen=True)
class WorkerDied:
    """The process running the trial died (killed, out of memory, node lost): not the architecture's fault."""

    reason: str = WORKER_CRASHED


Outcome = Union[Completed, Pruned, OverLimit, Diverged, Failed, WorkerDied]


def ended_early(result: Mapping[str, Any]) -> bool:
    """Whether a report says the trial ended without training that epoch (failed or over a limit)."""
    return bool(result.get("failed") or result.get("constraint_violation"))


def outcome_of(result: Mapping[str, Any], error: bool, metrics: list[str], epochs: int) -> Outcome:
    """How a trial ended, from its last report.

    Args:
        result: The trial's last ``EpochResult`` (empty if it reported nothing).
        error: Tune ended the trial with an error (its worker died, or the trainable raised).
        metrics: The objectives' metric names (the space's ``metrics``).
        epochs: The fidelity's epochs: a trial that reported fewer was stopped early.

    Returns:
        The outcome. An error inside the trial wins over anything else it reported; a
        diverged trial is never complete, even in its last epoch.
    """
    if result.get("failed"):
        return Failed(str(result.get("error") or WORKER_CRASHED))
    if error:
        return WorkerDied()
    if result.get("diverged"):
        return Diverged(str(result["diverged"]))
    if result.get("constraint_violation"):
        return OverLimit(str(result["constraint_violation"]))
    trained = int(result.get("epoch", 0) or 0)
    if trained < epochs:
        return Pruned(trained)
    values = [float(result[m]) for m in metrics]
    bad = [m for m, v in zip(metrics, values) if not math.isfinite(v)]
    if bad:
        return Failed(f"non-finite {', '.join(bad)} after {trained} epochs")
    return Completed(values)


def optuna_state(outcome: Outcome) -> tuple[TrialState, Values, dict[str, Any]]:
    """How the study records an outcome.

    Args:
        outcome: How the trial ended.

    Returns:
        ``(state, values, attrs)``: the Optuna state; the objective values for COMPLETE (a
        float with one objective, a list with several), else None; and the ``TrialRecord``
        fields that say why. A diverged trial is PRUNED, not FAIL: the sampler ignores FAIL
        trials but learns from PRUNED ones (ranked by their last intermediate value, here
        0.0), so it stops proposing the region that diverges.
    """
    match outcome:
        case Completed(values):
            return TrialState.COMPLETE, (values if len(values) > 1 else values[0]), {}
        case Pruned(at_epoch):
            return TrialState.PRUNED, None, {"pruned_at_epoch": at_epoch}
        case OverLimit(reason):
            return TrialState.PRUNED, None, {"constraint_violation": reason}
        case Diverged(reason):
            return TrialState.PRUNED, None, {"diverged": reason}
        case Failed(reason) | WorkerDied(reason):
            return TrialState.FAIL, None, {"fail_reason": reason}
    raise TypeError(f"not an Outcome: {outcome!r}")  # pragma: no cover - the match is exhaustive


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Only what Ray writes when its memory monitor really killed the worker. Ray's generic
# "actor died" text lists "(1) the process was killed by the OOM killer" among possible causes
# of any death, so "OOM killer" alone says nothing.
MEMORY_MARKERS = ("outofmemoryerror", "running low on memory")


def resource_reason(exc: BaseException) -> Optional[str]:
    """A one-line reason for an error that says the machine ran out of something, else None.

    Args:
        exc: An error raised inside a trial (or while writing its checkpoint).

    Returns:
        "no space left on the device ..." for a full disk, "out of memory ..." for a memory
        error (host or GPU), with the first line of the error; None for any other error.
    """
    first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")[:200]
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        where = f" writing {exc.filename}" if exc.filename else ""
        return f"no space left on the device{where}: free some space (or set TMPDIR to a larger disk) and run again"
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return f"out of memory ({type(exc).__name__}: {first}): use a smaller batch or model, or fewer trials per GPU"
    return None


def worker_death_reason(error_text: str) -> str:
    """Why a trial's worker died, in one line, from the error Ray saved for it.

    Args:
        error_text: The text of Tune's error file for the trial (may be empty).

    Returns:
        "the trial's worker was killed for lack of memory: ..." when Ray or the kernel killed
        it for memory, else "the trial's worker crashed: <the most telling line>".
    """
    lines = [ln.strip() for ln in error_text.splitlines() if ln.strip()]
    memory = next((ln for ln in lines if any(m in ln.lower() for m in MEMORY_MARKERS)), None)
    if memory is not None:
        return f"the trial's worker was killed for lack of memory: {memory[:300]}"
    for ln in lines:
        if "died" in ln.lower() or "exit" in ln.lower() or "killed" in ln.lower():
            return f"the trial's worker crashed: {ln[:300]}"
    return f"the trial's worker crashed: {lines[-1][:300]}" if lines else WORKER_CRASHED


def failure_reason(result: Mapping[str, Any]) -> Optional[str]:
    """Why a report ended its trial untrained (an error or a size limit), or None."""
    if not ended_early(result):
        return None
    return str(result.get("error") or result.get("constraint_violation"))
