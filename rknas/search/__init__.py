"""Search: space files, one trial, Ray start-up, the Tune <-> Optuna adapter, the runner.

``space`` (schema derived from the configs) -> ``objective`` (one trial, no Ray) ->
``searcher`` (final-state decision and the adapter) -> ``runner`` (orchestration), with
``ray_env`` for starting or joining Ray; ``warmstart`` turns ``start_from`` entries into a
new study's first trials, ``rerun`` retrains a recorded trial and compares its curve.
"""

from rknas.search.rerun import RerunResult, rerun_trial
from rknas.search.runner import SearchOptions, SearchResult, run_search
from rknas.search.space import SearchSpace, load_space, space_files
from rknas.search.warmstart import start_params

__all__ = ["RerunResult", "SearchOptions", "SearchResult", "SearchSpace", "load_space", "rerun_trial", "run_search",
           "space_files", "start_params"]
