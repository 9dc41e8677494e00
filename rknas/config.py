"""Reading config files (what `rknas best` writes, `rknas train` / `rknas describe` read): one-line errors.

The config classes live beside what they configure: ``NetworkConfig`` in
``rknas.models.network``, ``TrainConfig`` in ``rknas.train``, ``SearchSpace`` in
``rknas.search.space``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rknas.errors import ConfigError


def read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_network_section(path: Path) -> dict:
    """The ``network:`` section of a config file (or the whole file if it is a bare network)."""
    data = read_yaml(path)
    net = data.get("network", data)
    if not isinstance(net, dict):
        raise ConfigError(f"{path}: 'network' must be a mapping")
    return dict(net)
