"""Questions asked of a study: which trials count, the best one, the summary, the export."""

from __future__ import annotations

import datetime
from collections.abc import Collection
from typing import Any, NamedTuple, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from rknas._version import __version__
from rknas.config import NetworkConfig, SizeLimit
from rknas.errors import RknasError
from rknas.storage.backend import safe_url
from rknas.storage.bulk import FINISHED, INTERRUPTED, IncrementalComplete, load_trials, pareto_front, tally
from rknas.storage.racing import (
    RULE,
    Group,
    config_key,
    front,
    group_runs,
    next_repeat,
    next_repeat_front,
    ranked,
    repeat_attrs,
)
from rknas.storage.record import StudyRecord, TrialRecord

LEAN_KEYS = ("params", "flops", "seed", "repeat_of", "repeat")  # the record fields ranking and size limits read


def is_interrupted(t: FrozenTrial) -> bool:
    """Whether the search stopped before the trial finished (such trials do not count).

    Args:
        t: A trial of the study.

    Returns:
        True for a FAIL trial that a stopped search left unfinished.
    """
    return TrialRecord.of(t).interrupted


def finished_trials(study: optuna.Study, user_keys: Optional[Collection[str]] = None,
                    params: bool = True) -> list[FrozenTrial]:
    """Trials that count towards ``--trials``.

    Args:
        study: The study.
        user_keys: A lean read (``load_trials``): only these user attributes; ``interrupted``
            is always read, as it decides which trials count.
        params: False: no parameters (``load_trials``).

    Returns:
        COMPLETE, PRUNED, and FAIL trials except interrupted ones.
    """
    keys = None if user_keys is None else (*user_keys, *TrialRecord(interrupted=True).user_attrs())
    return [t for t in load_trials(study, states=FINISHED, user_keys=keys, params=params) if not is_interrupted(t)]


def accuracy_of(study: optuna.Study, t: FrozenTrial) -> float:
    """The validation accuracy among a trial's objective values.

    Args:
        study: The study (its record says which objective is the accuracy).
        t: A completed trial.

    Returns:
        The trial's validation accuracy.
    """
    return t.values[accuracy_index(study)]


def accuracy_index(study: optuna.Study) -> int:
    """Which of the study's objective values is the validation accuracy (read once, not per trial).

    Args:
        study: The study (its record names the objectives).

    Returns:
        The index of ``val_accuracy`` among the objectives (0 when it is not named).
    """
    metrics = StudyRecord.of(study).metrics or []
    return metrics.index("val_accuracy") if "val_accuracy" in metrics else 0


def summarize(study: optuna.Study) -> dict[str, Any]:
    """What ``rknas studies`` shows for one study.

    Args:
        study: The study.

    Returns:
        ``study``, ``space``, ``objectives``, ``directions``, ``trials``, ``counts`` per state
        (interrupted apart) and ``best_val_accuracy``.
    """
    counts = tally(study)
    record = StudyRecord.of(study)
    top = best_trial(study, lean=True)
    behind = evidence(study, top) if top is not None else None
    return {
        "study": study.study_name,
        "space": record.space_name,
        "objectives": record.metrics or ["value"] * len(study.directions),
        "directions": [d.name.lower() for d in study.directions],
        "trials": sum(counts.values()),
        "counts": {k: counts[k] for k in [*(s.name for s in TrialState), INTERRUPTED] if counts.get(k)},
        "best_val_accuracy": (behind["mean"] if behind else accuracy_of(study, top)) if top is not None else None,
        "best_runs": behind["runs"] if behind else (1 if top is not None else None),
    }


def racing_cap(study: optuna.Study) -> int:
    """The runs a configuration needs before the study believes it (the space's ``racing``; 1: one run)."""
    return int((StudyRecord.of(study).space_at() or {}).get("racing") or 1)


def _groups(study: optuna.Study, complete: list[FrozenTrial]) -> list[Group]:
    return group_runs((t.number, t.params, list(t.values), TrialRecord.of(t).params or 0) for t in complete)


def _signs(study: optuna.Study) -> list[float]:
    return [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in study.directions]


class Repeat(NamedTuple):
    """A re-measurement to enqueue: the configuration's parameters and the repeat's user attributes."""

    params: dict[str, Any]
    attrs: dict[str, int]  # ``repeat_of``, ``repeat`` (``racing.repeat_attrs``)
    last: int  # the configuration's latest complete run (its trial number)


def race_step(study: optuna.Study, cap: int,
              complete: Optional[IncrementalComplete] = None) -> tuple[list[Group], Optional[Repeat]]:
    """After a complete run: what the study reports now, and the repeat to ask for, if any.

    The whole study decides (``racing.next_repeat``), not only the run just recorded, and the
    decision reads the study, so every driver sees the others' runs and pending repeats: a
    configuration whose repeat is already waiting or running is not asked for again.

    Args:
        study: A study with at least one complete trial.
        cap: The racing cap (the space's ``racing``).
        complete: The caller's reader of the complete trials (``lean_complete``), kept from one
            step to the next so that each step reads only the trials new since the last.

    Returns:
        ``(reported, repeat)``: with one objective, ``[incumbent]`` (``racing.RULE``); with
        several, the reported Pareto set (``racing.front``); and the repeat to enqueue, or None
        when none is needed.
    """
    groups = _groups(study, (complete or lean_complete(study)).trials())
    owner = {n: g.key for g in groups for n in g.numbers}
    pending = set()  # one repeat of a configuration pending at a time
    if cap > 1:
        for t in load_trials(study, states=(TrialState.WAITING, TrialState.RUNNING), user_keys=("repeat_of",)):
            of = TrialRecord.of(t).repeat_of
            if of is not None and of in owner:
                pending.add(owner[of])
    if len(study.directions) == 1:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        reported = ranked(groups, cap, maximize)[:1]
        chosen = next_repeat(groups, cap, maximize, pending)
    else:
        reported = front(groups, cap, _signs(study))
        chosen = next_repeat_front(groups, cap, _signs(study), pending)
    return reported, None if chosen is None else Repeat(dict(chosen.config), repeat_attrs(chosen), chosen.numbers[-1])


def enqueue_repeat(study: optuna.Study, repeat: Repeat) -> None:
    """Ask for a racing repeat: a waiting trial of the configuration's parameters, marked as the repeat.

    On a database storage (``RetryingRDBStorage``) it is created once however many drivers ask at
    the same moment: one already waiting or running is kept instead. What Optuna's
    ``enqueue_trial`` writes, plus that mark.

    Args:
        study: The study.
        repeat: What ``race_step`` returned.
    """
    from rknas.storage.retry import ONCE_KEY

    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=dict(repeat.attrs),
                                              system_attrs={"fixed_params": dict(repeat.params), ONCE_KEY: True}))


def lean_complete(study: optuna.Study) -> IncrementalComplete:
    """A reader of the study's complete trials with the record fields ranking reads (``LEAN_KEYS``).

    Args:
        study: The study.

    Returns:
        An ``IncrementalComplete`` to keep and ask again.
    """
    return IncrementalComplete(study, user_keys=LEAN_KEYS)


def evidence(study: optuna.Study, t: FrozenTrial) -> Optional[dict[str, Any]]:
    """What stands behind a trial's score in a racing study: every complete run of its configuration.

    Args:
        study: The study.
        t: A completed trial.

    Returns:
        ``trials``, ``seeds``, ``values`` (one per run; a list per run with several
        objectives), ``mean`` (the validation accuracy's; ``means`` has each objective's), ``runs`` and the
        ``rule`` the search chose by; None when the study does not race.
    """
    if racing_cap(study) <= 1:
        return None
    complete = load_trials(study, states=(TrialState.COMPLETE,), user_keys=LEAN_KEYS)
    key = config_key(t.params)
    runs = [c for c in complete if config_key(c.params) == key]
    i = accuracy_index(study)
    means = [sum(c.values[j] for c in runs) / len(runs) for j in range(len(study.directions))]
    values: list[Any] = [c.values[0] for c in runs] if len(means) == 1 else [list(c.values) for c in runs]
    return {"trials": [c.number for c in runs], "seeds": [TrialRecord.of(c).seed for c in runs], "values": values,
            "mean": means[i], "means": means, "runs": len(runs), "rule": RULE}


def candidates(study: optuna.Study, lean: bool = False) -> list[FrozenTrial]:
    """The trials worth exporting, best first.

    Args:
        study: The study.
        lean: Read only the record fields that rank and limit (``LEAN_KEYS``): several times
            quicker on a large study, but without networks; ``full`` reads a few trials whole.

    Returns:
        Single objective: completed trials best first, a tie to fewer parameters, then the
        earlier trial (``racing.TIE_RULE``); in a racing study, one trial per
        configuration (its first run), ranked by ``rknas.storage.racing.RULE``. Several: the
        Pareto set, most accurate first; in a racing study, the configurations with their
        runs (``racing.front``), each as its first trial carrying the configuration's mean values.

    Raises:
        RknasError: The study has no completed trial.
    """
    complete = load_trials(study, states=(TrialState.COMPLETE,), user_keys=LEAN_KEYS if lean else None)
    if not complete:
        raise RknasError(f"study {study.study_name!r} has no completed trial yet")
    cap = racing_cap(study)
    if len(study.directions) == 1 and cap > 1:
        by_number = {t.number: t for t in complete}
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        return [by_number[g.numbers[0]] for g in ranked(_groups(study, complete), cap, maximize)]
    if len(study.directions) == 1:  # a tie goes to fewer parameters, then the earlier trial (racing.TIE_RULE)
        sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
        return sorted(complete, key=lambda t: (sign * t.values[0], TrialRecord.of(t).params or 0, t.number))
    i = accuracy_index(study)
    if cap > 1:  # each configuration once, by its mean point; it joins the front with its runs
        import copy

        by_number = {t.number: t for t in complete}
        out = []
        for g in front(_groups(study, complete), cap, _signs(study)):
            t = copy.deepcopy(by_number[g.numbers[0]])
            t.values = list(g.mean_point)  # the configuration's means (``evidence`` lists each run)
            out.append(t)
        return sorted(out, key=lambda t: -t.values[i])
    return sorted(pareto_front(complete, study.directions), key=lambda t: -t.values[i])


def best_trial(study: optuna.Study, lean: bool = False) -> Optional[FrozenTrial]:
    """The trial ``rknas best`` exports by default.

    Args:
        study: The study.
        lean: Only the record fields of ``LEAN_KEYS`` (see ``candidates``).

    Returns:
        The most accurate completed trial (of the Pareto set, with several objectives), or
        None when no trial completed.
    """
    try:
        return candidates(study, lean=lean)[0]
    except RknasError:
        return None


def full(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials read whole again (records with networks), in the given order and with their given
    values (a racing Pareto candidate carries its configuration's means).

    Args:
        study: The study.
        trials: Trials of it, e.g. lean ``candidates``.

    Returns:
        The same trials with every user attribute.
    """
    whole = {t.number: t for t in load_trials(study, trial_ids=[t._trial_id for t in trials])}
    out = []
    for t in trials:
        w = whole[t.number]
        if w.values != t.values:
            import copy

            w = copy.copy(w)
            w.values = t.values
        out.append(w)
    return out


def choose(
    study: optuna.Study,
    max_params: Optional[float] = None,
    max_flops: Optional[float] = None,
    trial: Optional[int] = None,
    pool: Optional[list[FrozenTrial]] = None,
) -> FrozenTrial:
    """The trial to export.

    Args:
        study: The study.
        max_params: Only candidates with at most this many parameters.
        max_flops: Only candidates with at most this many FLOPs.
        trial: Export this trial number instead of choosing.
        pool: ``candidates(study)`` (lean or not), when the caller has read them already.

    Returns:
        ``trial`` if given, else the first candidate (most accurate) within the limits; read whole.

    Raises:
        RknasError: The trial does not exist or did not complete, or no candidate fits.
    """
    if trial is not None:
        found = [t for t in load_trials(study, states=(TrialState.COMPLETE,), user_keys=()) if t.number == trial]
        if not found:
            raise RknasError(f"trial {trial} of study {study.study_name!r} does not exist or did not complete")
        return full(study, found)[0]
    pool = candidates(study, lean=True) if pool is None else pool

    def size(t: FrozenTrial) -> tuple[int, int]:
        r = TrialRecord.of(t)
        return r.params or 0, r.flops or 0

    limit = SizeLimit(max_params=max_params, max_flops=max_flops)
    ok = [t for t in pool if limit.admits(*size(t))]
    if not ok:
        params, flops = size(min(pool, key=lambda t: size(t)[0]))
        raise RknasError(
            f"no candidate of study {study.study_name!r} fits the limits; the smallest has {params:,} params and {flops:,} FLOPs"
        )
    return full(study, ok[:1])[0]


def ties(study: optuna.Study, pool: list[FrozenTrial], chosen: FrozenTrial) -> int:
    """How many other candidates score exactly what ``chosen`` scores (single objective).

    Accuracy on a validation split moves in steps of one image, so ties at the top are common;
    the rule that broke them is ``racing.TIE_RULE`` (with racing: ``racing.RULE``).

    Args:
        study: The study.
        pool: ``candidates(study)``.
        chosen: One of them.

    Returns:
        The number of other candidates with the same score (with racing: the same mean over as
        many runs); 0 with several objectives.
    """
    if len(study.directions) != 1:
        return 0
    if racing_cap(study) > 1:
        complete = load_trials(study, states=(TrialState.COMPLETE,), user_keys=LEAN_KEYS)
        groups = {g.numbers[0]: g for g in _groups(study, complete)}
        g = groups.get(chosen.number)
        if g is None:
            return 0
        cap = racing_cap(study)
        return sum(1 for o in groups.values() if o is not g and min(o.runs, cap) == min(g.runs, cap) and o.mean == g.mean)
    return sum(1 for t in pool if t.number != chosen.number and t.values[0] == chosen.values[0])


def export_config(study: optuna.Study, t: FrozenTrial, url: str) -> dict[str, Any]:
    """A self-contained config of one trial: what ``rknas train`` reads.

    Args:
        study: The study.
        t: A trial with a recorded network.
        url: The storage URL, recorded as provenance.

    Returns:
        ``network``, ``training``, ``data`` and ``provenance`` (study, trial, values, seed,
        strategy versions, rknas versions).

    Raises:
        RknasError: The trial has no recorded network config.
    """
    record, info = TrialRecord.of(t), StudyRecord.of(study)
    if record.network is None or record.training is None:
        raise RknasError(f"trial {t.number} of study {study.study_name!r} has no recorded network config")
    metrics = info.metrics or ["val_accuracy"]
    return {
        "rknas_config": 1,
        "name": NetworkConfig.model_validate(record.network).name,
        "network": record.network,
        "training": record.training,
        "data": (info.space_at(record.space_revision or 0) or {}).get("data", {}),
        "provenance": {
            "study": study.study_name,
            "storage": safe_url(url),
            "trial": t.number,
            "space": info.space_name,
            "space_revision": record.space_revision or 0,
            "values": dict(zip(metrics, t.values)),
            **({"runs": behind} if (behind := evidence(study, t)) else {}),
            "val_accuracy_per_epoch": record.val_accuracy_per_epoch,
            "params": record.params,
            "flops": record.flops,
            "seed": record.seed,
            "strategy_versions": record.strategy_versions,
            "rknas_version_search": info.rknas_version,
            "rknas_version_export": __version__,
            "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    }
