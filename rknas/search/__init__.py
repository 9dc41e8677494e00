"""Search: space files, one trial, Ray start-up, the Tune <-> Optuna adapter, the runner.

``space`` (schema derived from the configs) -> ``objective`` (one trial, no Ray) ->
``searcher`` (the driver's share of a study, the final-state decision) -> ``tune_adapter``
(the Tune <-> Optuna adapter, which imports Ray) -> ``runner`` (orchestration), with
``ray_env`` for starting or joining Ray; ``warmstart`` turns ``start_from`` entries into a
new study's first trials, ``rerun`` retrains a recorded trial and compares its curve.
Importing the package imports none of them: each name is imported on first use.
"""

from typing import TYPE_CHECKING

from rknas._lazy import lazy_exports

if TYPE_CHECKING:
    from rknas.search.rerun import RerunResult, rerun_trial
    from rknas.search.runner import SearchOptions, SearchResult, run_search
    from rknas.search.space import SearchSpace, load_space, space_files
    from rknas.search.warmstart import start_params

__getattr__, __dir__ = lazy_exports(__name__, {
    "rknas.search.rerun": (
        "RerunResult", "rerun_trial",
    ),
    "rknas.search.runner": (
        "SearchOptions", "SearchResult", "run_search",
    ),
    "rknas.search.space": (
        "SearchSpace", "load_space", "space_files",
    ),
    "rknas.search.warmstart": (
        "start_params",
    ),
})

__all__ = ["RerunResult", "SearchOptions", "SearchResult", "SearchSpace", "load_space", "rerun_trial", "run_search",
           "space_files", "start_params"]
