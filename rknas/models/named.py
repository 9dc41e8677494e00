"""The named models plugins registered (``register_models``), validated as ``NetworkConfig``s; no torch."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

from rknas.plugins import Registered
from rknas.registry import Refused, by_name, cached, collect


@dataclasses.dataclass(frozen=True)
class NamedModel(Registered):
    """A named network configuration and the package that registered it."""

    name: str
    config: Mapping[str, Any]
    package: str = ""
    version: str = ""


def models() -> dict[str, NamedModel]:
    """Every named model plugins registered, by name (cached until the plugin set changes).

    Returns:
        Named models keyed by name, built-in paper models first.

    Raises:
        PluginError: Two plugins register the same name, or a config is not a valid
            ``NetworkConfig``.
    """
    return dict(cached("models", lambda: by_name(collect("register_models", NamedModel, _validate), "model")))


def _validate(provider: str, config: Any, positional_name: Optional[str] = None, name: Optional[str] = None) -> NamedModel:
    from pydantic import ValidationError

    from rknas.config import NetworkConfig, format_validation_error, model_name

    name = positional_name or name
    if not isinstance(config, Mapping):
        raise Refused(f"registered model config {config!r}, which is not a mapping of NetworkConfig fields")
    try:
        cfg = NetworkConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise Refused(f"registered an invalid model config: {format_validation_error(exc)}") from None
    return NamedModel(str(name or model_name(cfg)), dict(config))
