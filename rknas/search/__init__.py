"""Search: space files, one trial, Ray start-up, the Tune <-> Optuna adapter, the runner.

``space`` (schema derived from the configs) -> ``objective`` (one trial, no Ray) ->
``searcher`` (final-state decision and the adapter) -> ``runner`` (orchestration), with
``ray_env`` for starting or joining Ray.
"""

from rknas.search.runner import SearchOptions, SearchResult, run_search
from rknas.search.space import SearchSpace, load_space, space_files

__all__ = ["SearchOptions", "SearchResult", "SearchSpace", "load_space", "run_search", "space_files"]
