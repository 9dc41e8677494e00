"""The study storage's defaults, apart from the modules that import SQLAlchemy and Optuna.

The options (``rknas.options``) show them in ``--help``, which must not load a database layer.
"""

DEFAULT_STORAGE = "sqlite:///studies/rknas.db"
STORAGE_ENV = "RKNAS_STORAGE"
DEFAULT_RETRY_S = 60.0  # --storage-retry: how long a search waits for its storage to come back
