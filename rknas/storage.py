"""Study storage: any SQLAlchemy URL through Optuna's RDBStorage, SQLite by default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import optuna
from optuna.trial import TrialState

from rknas.errors import RknasError

DEFAULT_STORAGE = "sqlite:///studies/rknas.db"
STORAGE_ENV = "RKNAS_STORAGE"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_url(url: Optional[str] = None) -> str:
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def open_storage(url: Optional[str] = None, create: bool = True) -> optuna.storages.RDBStorage:
    """Open (and for SQLite create) a storage; readers and the search share it safely."""
    url = storage_url(url)
    kwargs: dict = {}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if not create and not path.is_file():
            raise RknasError(f"storage {url} does not exist (no file {path}); run `rknas search` first or pass --storage")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RknasError(f"cannot create the folder for storage {url}: {exc.strerror}") from None
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:  # sqlalchemy raises many kinds; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RknasError(f"cannot open storage {url}: {first}") from None


def study_names(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(storage, name: str) -> optuna.Study:
    names = study_names(storage)
    if name not in names:
        raise RknasError(f"no study {name!r} in this storage; studies: {', '.join(names) or '(none)'}")
    return optuna.load_study(study_name=name, storage=storage)


def is_interrupted(t) -> bool:
    return bool(t.user_attrs.get("interrupted"))


def finished_trials(study: optuna.Study) -> list:
    """Trials that count towards --trials: COMPLETE, PRUNED, and FAIL except interrupted ones."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED) if not is_interrupted(t)]


def fail_running(study: optuna.Study, reason: str) -> int:
    """Mark trials left RUNNING (a killed or interrupted search) as FAIL; they do not count."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    return n


def summarize(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        key = "INTERRUPTED" if t.state == TrialState.FAIL and is_interrupted(t) else t.state.name
        counts[key] = counts.get(key, 0) + 1
    top = best_trial(study)
    best = accuracy_of(study, top) if top is not None else None
    return {
        "study": study.study_name,
        "space": study.user_attrs.get("space_name"),
        "objectives": study.user_attrs.get("metrics", ["value"] * len(study.directions)),
        "directions": [d.name.lower() for d in study.directions],
        "trials": len(trials),
        "counts": {k: v for k, v in counts.items() if v},
        "best_val_accuracy": best,
    }


# ---- export ------------------------------------------------------------------------------------
def candidates(study: optuna.Study) -> list:
    """Single objective: completed trials best first. Several: the Pareto set, most accurate first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise RknasError(f"study {study.study_name!r} has no completed trial yet")
    if len(study.directions) == 1:
        sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
        return sorted(complete, key=lambda t: sign * t.value)
    return sorted(study.best_trials, key=lambda t: -accuracy_of(study, t))


def best_trial(study: optuna.Study):
    """The most accurate completed trial (of the Pareto set, with several objectives), or None."""
    try:
        return candidates(study)[0]
    except RknasError:
        return None


def accuracy_of(study: optuna.Study, t) -> float:
    metrics = study.user_attrs.get("metrics", [])
    return t.values[metrics.index("val_accuracy") if "val_accuracy" in metrics else 0]


def choose(study: optuna.Study, max_params: Optional[float] = None, max_flops: Optional[float] = None, trial: Optional[int] = None):
    """The trial to export: ``trial`` if given, else the first candidate (most accurate) within the limits."""
    if trial is not None:
        found = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not found or found[0].state != TrialState.COMPLETE:
            raise RknasError(f"trial {trial} of study {study.study_name!r} does not exist or did not complete")
        return found[0]
    pool = candidates(study)
    ok = [
        t for t in pool
        if (max_params is None or t.user_attrs.get("params", 0) <= max_params)
        and (max_flops is None or t.user_attrs.get("flops", 0) <= max_flops)
    ]
    if not ok:
        smallest = min(pool, key=lambda t: t.user_attrs.get("params", 0))
        raise RknasError(
            f"no candidate of study {study.study_name!r} fits the limits; the smallest has "
            f"{smallest.user_attrs.get('params', 0):,} params and {smallest.user_attrs.get('flops', 0):,} FLOPs"
        )
    return ok[0]


def export_config(study: optuna.Study, t, url: str) -> dict:
    """A self-contained config: network, training, data, and where it came from."""
    import datetime

    from rknas import __version__

    if "network" not in t.user_attrs:
        raise RknasError(f"trial {t.number} of study {study.study_name!r} has no recorded network config")
    space = study.user_attrs.get("space", {})
    metrics = study.user_attrs.get("metrics", ["val_accuracy"])
    return {
        "rknas_config": 1,
        "name": _name(t.user_attrs["network"]),
        "network": t.user_attrs["network"],
        "training": t.user_attrs["training"],
        "data": space.get("data", {}),
        "provenance": {
            "study": study.study_name,
            "storage": url,
            "trial": t.number,
            "space": study.user_attrs.get("space_name"),
            "values": dict(zip(metrics, t.values)),
            "val_accuracy_per_epoch": t.user_attrs.get("val_accuracy_per_epoch"),
            "params": t.user_attrs.get("params"),
            "flops": t.user_attrs.get("flops"),
            "seed": t.user_attrs.get("seed"),
            "strategy_versions": t.user_attrs.get("strategy_versions"),
            "rknas_version_search": study.user_attrs.get("rknas_version"),
            "rknas_version_export": __version__,
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _name(network: dict) -> str:
    from rknas.models.network import NetworkConfig

    return NetworkConfig.model_validate(network).name
