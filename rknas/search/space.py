"""Search-space files: a schema derived from the configs, name lookup, and Optuna sampling.

A value in ``architecture`` or ``training`` is either fixed (a scalar), a choice (a list), or
a range (``{low, high, step?, log?}``). The two sections are derived from ``NetworkConfig``
and ``TrainConfig``: every field of those configs is a searchable key with the config's own
default and validation, so a new config field is searchable with no edit here. Per-period
keys (the list fields of ``NetworkConfig``: strategy, stages, k, steps) are sampled
separately for each period, and a strategy is only paired with stage counts it supports
(``min_stages``), so no trial fails for an impossible combination.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from rknas.config import DataSpec, Framework, NetworkConfig, SizeLimit, TrainConfig, format_validation_error, read_yaml
from rknas.errors import ConfigError
from rknas.plugins import Registered
from rknas.registry import collect
from rknas.search.params import NETWORK_FROM_SPACE, is_list, per_period_fields, period_param, stages_at_least
from rknas.strategies.lookup import strategies


class Range(BaseModel):
    """A numeric range; ``step`` makes it discrete, ``log`` samples on a log scale."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    step: Optional[float] = None
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


Param = Union[Range, list, bool, int, float, str, None]

# Config fields a space does not search: the space's data and framework decide them, or
# the search does (epochs from the fidelity, a seed per trial, augmentation from the data).
TRAINING_FROM_SPACE = ("epochs", "seed", "crop_pad", "flip", "milestones")
# Search defaults that differ from a single network's defaults: a space explores.
ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    "strategy": ["E", "I", "R"],
    "stages": Range(low=1, high=5),
    "k": Range(low=16, high=64, step=8),
    "attention": True,
    "multiscale": True,
}


def _values(p: Any) -> list:
    """The listed values of a parameter, or a range's two ends (enough for min/max checks)."""
    if isinstance(p, Range):
        return [p.low, p.high]
    return list(p) if isinstance(p, list) else [p]


def _base_type(annotation: Any) -> Any:
    """int for ``int``, ``list[int]`` and ``Optional[int]``; the annotation itself otherwise."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if is_list(annotation) or (typing.get_origin(annotation) is Union and len(args) == 1):
        return args[0]
    return annotation


def _section(name: str, config_cls: type[BaseModel], skip: tuple[str, ...], defaults: dict, extra: dict) -> type[BaseModel]:
    fields: dict[str, Any] = dict(extra)
    per_period = is_list
    for fname, info in config_cls.model_fields.items():
        if fname in skip:
            continue
        if fname in defaults:
            default = defaults[fname]
        else:
            default = info.get_default(call_default_factory=True)
            if per_period(info.annotation) and isinstance(default, list) and len(default) == 1:
                default = default[0]
        fields[fname] = (Param, Field(default, description=info.description))
    model: type[BaseModel] = create_model(
        name, __config__=ConfigDict(extra="forbid"), __doc__=f"The searchable fields of {config_cls.__name__}.", **fields
    )
    return model


def architecture_section(network_cls: type[NetworkConfig] = NetworkConfig) -> type[BaseModel]:
    """The ``architecture:`` schema: every field of ``network_cls`` plus ``periods``."""
    return _section("Architecture", network_cls, NETWORK_FROM_SPACE, ARCHITECTURE_DEFAULTS, {"periods": (int, Field(3, ge=1))})


def training_section(train_cls: type[TrainConfig] = TrainConfig) -> type[BaseModel]:
    """The ``training:`` schema: every field of ``train_cls`` the search does not set itself."""
    return _section("Training", train_cls, TRAINING_FROM_SPACE, {}, {})


Architecture = architecture_section()
Training = training_section()


class Fidelity(BaseModel):
    """How much each trial trains; ASHA stops the weak ones at rungs of min_epochs * rf^i."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(10, ge=1)
    min_epochs: int = Field(2, ge=1)
    reduction_factor: int = Field(3, ge=2)
    early_stopping: bool = True


class Objective(BaseModel):
    """One metric the study optimises."""

    model_config = ConfigDict(extra="forbid")
    metric: Literal["val_accuracy", "params", "flops"]
    direction: Literal["maximize", "minimize"]


class Constraints(SizeLimit):
    """Size limits; a trial over them is PRUNED before training and steers the sampler away."""


class SearchSpace(BaseModel):
    """A validated search-space file: data, framework, ranges, fidelity, objectives.

    ``config_classes`` names the configs the two searchable sections are derived from;
    ``space_schema`` builds a variant over other config classes (a plugin's, or a test's).
    """

    model_config = ConfigDict(extra="forbid")
    config_classes: ClassVar[tuple[type[NetworkConfig], type[TrainConfig]]] = (NetworkConfig, TrainConfig)

    name: str = ""
    description: str = ""
    data: DataSpec
    framework: Framework = "cifar"
    classes: Optional[int] = None
    in_channels: Optional[int] = None
    image_size: Optional[int] = None
    architecture: Architecture = Field(default_factory=Architecture)  # type: ignore[valid-type]
    training: Training = Field(default_factory=Training)  # type: ignore[valid-type]
    fidelity: Fidelity = Fidelity()
    objectives: list[Objective] = [Objective(metric="val_accuracy", direction="maximize")]
    sampler: str = Field(
        "auto",
        description="The search's Optuna sampler: a registered name (rknas.search.samplers) or auto (the default).",
    )
    sampler_window: Optional[int] = Field(
        None,
        ge=10,
        description="The sampler learns from the latest this-many finished trials only (default: all); bounds TPE's "
        "cost per proposal and the driver's memory on studies of thousands of trials (benchmarks/RESULTS.md).",
    )
    racing: int = Field(
        1,
        ge=1,
        description="Runs a configuration needs before it is believed: one that would become the best is run again on "
        "new seeds (a trial each, costing budget) up to this many times; 1: believe one run (rknas.storage.racing).",
    )
    constraints: Constraints = Constraints()
    start_from: list[Union[str, dict[str, Any]]] = Field(
        default_factory=list,
        description="Known designs a new study runs first: model names, or mappings of settings (rknas.search.warmstart).",
    )

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[Objective]) -> list[Objective]:
        if not v:
            raise ValueError("at least one objective is needed")
        metrics = [o.metric for o in v]
        if "val_accuracy" not in metrics:
            raise ValueError("val_accuracy must be one of the objectives (it drives early stopping)")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives repeat a metric: {metrics}")
        return v

    @model_validator(mode="after")
    def _fidelity(self) -> SearchSpace:
        if self.fidelity.min_epochs > self.fidelity.epochs:
            self.fidelity.min_epochs = self.fidelity.epochs
        return self

    # ---- derived ---------------------------------------------------------------------------
    @property
    def metrics(self) -> list[str]:
        """The objectives' metric names, in order."""
        return [o.metric for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        """``maximize``/``minimize`` per objective, in order."""
        return [o.direction for o in self.objectives]

    @property
    def arch(self) -> Any:
        """The ``architecture`` section (its class is derived at import, so typed loosely)."""
        return self.architecture

    @property
    def periods(self) -> int:
        """Periods of every network in the space."""
        return int(self.arch.periods)

    def strategies(self) -> list[str]:
        """The strategy names the space lists.

        Returns:
            The names, one per list entry (a single name as a list of one).
        """
        strategy = self.arch.strategy
        return [strategy] if isinstance(strategy, str) else list(strategy)

    def _section_fields(self, section: str) -> list[str]:
        return [k for k in type(getattr(self, section)).model_fields if k != "periods"]

    # ---- checks ------------------------------------------------------------------------------
    def check_strategies(self, where: str) -> None:
        """Every strategy must exist and fit the stage range, and the sampler must exist; otherwise say which and why.

        Args:
            where: The space's name or file, for the message.

        Raises:
            ConfigError: An unknown strategy, or none that works with the stage range.
        """
        known = strategies()
        names = self.strategies()
        for n in names:
            if n not in known:
                raise ConfigError(f"{where}: architecture.strategy: unknown stage strategy {n!r}; known: {', '.join(known)}")
        max_s = max(int(v) for v in _values(self.arch.stages))
        if not [n for n in names if known[n].min_stages <= max_s]:
            raise ConfigError(f"{where}: no listed strategy works with at most {max_s} stages (architecture.stages)")
        from rknas.search.samplers import AUTO, registered_samplers

        known_samplers = registered_samplers()
        if self.sampler != AUTO and self.sampler not in known_samplers:
            raise ConfigError(f"{where}: sampler: unknown sampler {self.sampler!r}; known: {', '.join([AUTO, *known_samplers])}")
        if self.sampler != AUTO and len(self.objectives) > 1 and not known_samplers[self.sampler].multi_objective:
            raise ConfigError(f"{where}: sampler {self.sampler!r} handles one objective; the space has {len(self.objectives)}")

    def check_values(self, where: str) -> None:
        """Validate every listed value and range end with the config class's own rules.

        A space that could propose an invalid network or optimiser fails at load, not in
        every trial.

        Args:
            where: The space's name or file, for the message.

        Raises:
            ConfigError: The first value the config rejects, with section, key and reason.
        """
        net_cls, train_cls = self.config_classes
        per = set(per_period_fields(net_cls))
        for section, cls in (("architecture", net_cls), ("training", train_cls)):
            for key in self._section_fields(section):
                if key == "strategy":
                    continue  # names are checked against the registry by check_strategies
                param = getattr(getattr(self, section), key)
                base = _base_type(cls.model_fields[key].annotation)
                if isinstance(param, list) and not param:
                    raise ConfigError(f"{where}: {section}.{key}: an empty list; give a value, a list or a range")
                if isinstance(param, Range) and base not in (int, float):
                    raise ConfigError(f"{where}: {section}.{key}: a range needs a numeric setting; give a value or a list")
                for value in _values(param):
                    v = int(value) if base is int and isinstance(value, float) and value.is_integer() else value
                    try:
                        cls.model_validate({key: [v] if key in per else v}, strict=True)
                    except ValidationError as exc:
                        why = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                        raise ConfigError(f"{where}: {section}.{key}: {value!r} is not allowed: {why}") from None

    # ---- sampling ----------------------------------------------------------------------------
    def sample(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: suggest every searched value on an Optuna trial.

        Args:
            trial: An ``optuna.Trial``.

        Returns:
            The constants (fixed values), which Optuna does not record as parameters.
        """
        known = strategies()
        arch, training = self.arch, self.training
        net_cls, train_cls = self.config_classes
        net_ints, train_ints = _int_fields(net_cls), _int_fields(train_cls)
        per = per_period_fields(net_cls)
        fixed: dict[str, Any] = {}
        max_s = max(int(v) for v in _values(arch.stages))
        allowed = [n for n in self.strategies() if known[n].min_stages <= max_s]
        for p in range(1, self.periods + 1):
            strat = _suggest(trial, period_param(p, "strategy"), allowed, fixed)
            low_s = known[strat].min_stages
            stages_param = arch.stages
            if isinstance(stages_param, Range):
                stages_param = Range(low=max(stages_param.low, low_s), high=stages_param.high, step=stages_param.step or 1)
            elif isinstance(stages_param, list) and min(stages_param) < low_s:
                # Optuna's categorical choices may not change between trials under one name:
                # strategies that need more stages get their own parameter.
                value = _suggest(trial, stages_at_least(p, low_s), [s for s in stages_param if s >= low_s], fixed)
                fixed[period_param(p, "stages")] = value
                stages_param = None
            if stages_param is not None:
                _suggest(trial, period_param(p, "stages"), stages_param, fixed, integer=True)
            for key in per:
                if key not in ("strategy", "stages"):
                    _suggest(trial, period_param(p, key), getattr(arch, key), fixed, integer=key in net_ints)
        for key in self._section_fields("architecture"):
            if key not in per:
                _suggest(trial, key, getattr(arch, key), fixed, integer=key in net_ints)
        for key in self._section_fields("training"):
            _suggest(trial, key, getattr(training, key), fixed, integer=key in train_ints)
        return fixed

    def configs(self, params: dict[str, Any], seed: int = 0, epochs: Optional[int] = None) -> tuple[NetworkConfig, TrainConfig]:
        """The network and training configs of one trial's parameters.

        Args:
            params: The trial's parameters and constants (``p1_k``, ``lr``, ...). A key that is
                missing takes the space's value when that value is fixed.
            seed: The trial's seed.
            epochs: Training epochs (default: the fidelity's).

        Returns:
            ``(NetworkConfig, TrainConfig)``.

        Raises:
            ConfigError: The parameters do not make a valid configuration.
        """
        net_cls, train_cls = self.config_classes
        per = per_period_fields(net_cls)

        def value(section: str, key: str, name: str) -> Any:
            if name in params:
                return params[name]
            fixed = getattr(getattr(self, section), key)
            if isinstance(fixed, (Range, list)):
                raise ConfigError(f"trial parameters lack {name!r}, which space {self.name!r} searches")
            return fixed

        net: dict[str, Any] = {
            key: [value("architecture", key, period_param(p, key)) for p in range(1, self.periods + 1)] for key in per
        }
        net.update({k: value("architecture", k, k) for k in self._section_fields("architecture") if k not in per})
        net.update(framework=self.framework, classes=self.classes or 10, in_channels=self.in_channels, image_size=self.image_size)
        tr = {k: value("training", k, k) for k in self._section_fields("training")}
        tr.update(epochs=epochs or self.fidelity.epochs, seed=seed, crop_pad=self.data.crop_pad, flip=self.data.flip)
        try:
            return net_cls.model_validate(net), train_cls.model_validate(tr)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"space {self.name!r}")) from None


def space_schema(
    network_cls: type[NetworkConfig] = NetworkConfig, train_cls: type[TrainConfig] = TrainConfig
) -> type[SearchSpace]:
    """A ``SearchSpace`` class whose sections are derived from other config classes.

    Args:
        network_cls: A ``NetworkConfig`` (sub)class.
        train_cls: A ``TrainConfig`` (sub)class.

    Returns:
        A ``SearchSpace`` subclass; its ``configs()`` builds instances of the two classes.
    """
    if (network_cls, train_cls) == SearchSpace.config_classes:
        return SearchSpace
    arch, train = architecture_section(network_cls), training_section(train_cls)
    schema: type[SearchSpace] = create_model(
        "SearchSpace",
        __base__=SearchSpace,
        architecture=(arch, Field(default_factory=arch)),
        training=(train, Field(default_factory=train)),
    )
    schema.config_classes = (network_cls, train_cls)
    return schema


@functools.lru_cache(maxsize=64)  # asked on every trial's sample; a class's fields never change
def _int_fields(cls: type[BaseModel]) -> frozenset[str]:
    return frozenset(n for n, f in cls.model_fields.items() if _base_type(f.annotation) is int)


def _suggest(trial: Any, name: str, param: Any, fixed: dict[str, Any], integer: bool = False) -> Any:
    if isinstance(param, Range):
        if integer:
            return trial.suggest_int(name, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
        return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
    if isinstance(param, list):
        if len(param) == 1:
            fixed[name] = param[0]
            return param[0]
        return trial.suggest_categorical(name, param)
    fixed[name] = param
    return param


# ---- files -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SpaceSource(Registered):
    """A search-space file, or a folder of them, that a plugin registered (``register_search_spaces``)."""

    path: Path
    package: str = ""
    version: str = ""

    @property
    def name(self) -> str:
        return str(self.path)


def search_space_sources() -> list[SpaceSource]:
    """Every search-space file or folder plugins registered, built-ins first."""
    return collect("register_search_spaces", SpaceSource, lambda provider, path: SpaceSource(Path(path)))


def space_files() -> dict[str, tuple[Path, str]]:
    """Every known space.

    Returns:
        name -> (file, providing package), from plugins (the shipped spaces included) and
        from ``./search_spaces``.
    """
    found: dict[str, tuple[Path, str]] = {}
    for source in search_space_sources():
        path = source.path
        files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        for f in files:
            found.setdefault(f.stem, (f, source.package))
    local = Path.cwd() / "search_spaces"
    if local.is_dir():
        for f in sorted(local.glob("*.y*ml")):
            found.setdefault(f.stem, (f, "local"))
    return found


def resolve_space_path(name_or_path: str) -> Path:
    """The file of a space name or path.

    Raises:
        ConfigError: No such file, or an unknown name (the message lists the known ones).
    """
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"search space file {p} does not exist")
        return p
    known = space_files()
    if name_or_path not in known:
        raise ConfigError(
            f"unknown search space {name_or_path!r}; known: {', '.join(sorted(known))} (or give a path to a .yaml file)"
        )
    return known[name_or_path][0]


def load_space(name_or_path: str) -> SearchSpace:
    """Load and fully validate a space: schema, strategy names, and every listed value.

    Args:
        name_or_path: A known space name (``rknas spaces``) or a path to a YAML file.

    Returns:
        The validated space.

    Raises:
        ConfigError: The file is missing or invalid; the message names the file and key.
    """
    path = resolve_space_path(name_or_path)
    return parse_space(read_yaml(path), str(path), default_name=path.stem)


def parse_space(raw: dict[str, Any], where: str, default_name: str = "", schema: type[SearchSpace] = SearchSpace) -> SearchSpace:
    """Validate a space given as a mapping (see ``load_space``); ``where`` prefixes errors."""
    try:
        space = schema.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where, model=schema)) from None
    if not space.name:
        space.name = default_name
    space.check_strategies(where)
    space.check_values(where)
    if space.start_from:
        from rknas.search.warmstart import start_params  # imports this module

        start_params(space, where=f"{where}: start_from")  # what the space alone can check; the search checks the data
    return space
