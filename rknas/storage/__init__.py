"""Study storage: where studies live, what each trial records, and the queries on them."""

from typing import TYPE_CHECKING

from rknas._lazy import lazy_exports

if TYPE_CHECKING:
    from rknas.storage.backend import (
        DEFAULT_STORAGE,
        STORAGE_ENV,
        load_study,
        open_storage,
        open_study,
        safe_url,
        storage_url,
        study_names,
    )
    from rknas.storage.liveness import Heartbeats, driver_id, interrupt_trials, recover_stale
    from rknas.storage.queries import (
        FINISHED,
        accuracy_of,
        best_trial,
        candidates,
        choose,
        evidence,
        export_config,
        finished_trials,
        full,
        is_interrupted,
        summarize,
        ties,
    )
    from rknas.storage.record import StudyRecord, TrialRecord

__getattr__, __dir__ = lazy_exports(__name__, {
    "rknas.storage.backend": (
        "DEFAULT_STORAGE", "STORAGE_ENV", "load_study", "open_storage", "open_study", "safe_url",
        "storage_url", "study_names",
    ),
    "rknas.storage.liveness": (
        "Heartbeats", "driver_id", "interrupt_trials", "recover_stale",
    ),
    "rknas.storage.queries": (
        "FINISHED", "accuracy_of", "best_trial", "candidates", "choose", "evidence", "export_config", "finished_trials",
        "full", "is_interrupted", "summarize", "ties",
    ),
    "rknas.storage.record": (
        "StudyRecord", "TrialRecord",
    ),
})

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "FINISHED",
    "Heartbeats",
    "StudyRecord",
    "TrialRecord",
    "accuracy_of",
    "best_trial",
    "candidates",
    "choose",
    "driver_id",
    "evidence",
    "export_config",
    "finished_trials",
    "full",
    "interrupt_trials",
    "is_interrupted",
    "load_study",
    "open_study",
    "open_storage",
    "recover_stale",
    "safe_url",
    "storage_url",
    "study_names",
    "summarize",
    "ties",
]
