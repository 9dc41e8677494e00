"""Search-space files: a validated schema, name lookup, and the Optuna sampling function.

A value in ``architecture`` or ``training`` is either fixed (a scalar), a choice (a list), or
a range (``{low, high, step?, log?}``). Per-period keys (strategy, stages, k, steps) are
sampled separately for each period, and a strategy is only paired with stage counts it
supports (``min_stages``), so no trial fails for an impossible combination.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rknas.data.core import DataSpec
from rknas.errors import ConfigError
from rknas.models.network import NetworkConfig, format_validation_error
from rknas.train import TrainConfig


class Range(BaseModel):
    """A numeric range; ``step`` makes it discrete, ``log`` samples on a log scale."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    step: Optional[float] = None
    log: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


Param = Union[Range, list, bool, int, float, str]


def _values(p) -> list:
    """The listed values of a parameter, or a range's two ends (enough for min/max checks)."""
    if isinstance(p, Range):
        return [p.low, p.high]
    return list(p) if isinstance(p, list) else [p]


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid")
    periods: int = Field(3, ge=1)
    strategy: Union[list[str], str] = ["E", "I", "R"]
    stages: Param = Range(low=1, high=5)
    k: Param = Range(low=16, high=64, step=8)
    steps: Param = 1
    attention: Param = True
    multiscale: Param = True
    width: Param = 1.0
    dropout: Param = 0.0


class Training(BaseModel):
    model_config = ConfigDict(extra="forbid")
    optimizer: Param = "sgd"
    lr: Param = 0.1
    momentum: Param = 0.9
    nesterov: bool = True
    weight_decay: Param = 1e-4
    batch_size: Param = 64
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: Param = 0.0
    bn_recalibrate: bool = True


class Fidelity(BaseModel):
    """How much each trial trains; ASHA stops the weak ones at rungs of min_epochs * rf^i."""

    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(10, ge=1)
    min_epochs: int = Field(2, ge=1)
    reduction_factor: int = Field(3, ge=2)
    early_stopping: bool = True


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: Literal["val_accuracy", "params", "flops"]
    direction: Literal["maximize", "minimize"]


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_params: Optional[float] = None
    max_flops: Optional[float] = None


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    description: str = ""
    data: DataSpec
    framework: Literal["cifar", "mnist"] = "cifar"
    classes: Optional[int] = None
    in_channels: Optional[int] = None
    image_size: Optional[int] = None
    architecture: Architecture = Architecture()
    training: Training = Training()
    fidelity: Fidelity = Fidelity()
    objectives: list[Objective] = [Objective(metric="val_accuracy", direction="maximize")]
    constraints: Constraints = Constraints()

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v):
        if not v:
            raise ValueError("at least one objective is needed")
        metrics = [o.metric for o in v]
        if "val_accuracy" not in metrics:
            raise ValueError("val_accuracy must be one of the objectives (it drives early stopping)")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objectives repeat a metric: {metrics}")
        return v

    @model_validator(mode="after")
    def _fidelity(self):
        if self.fidelity.min_epochs > self.fidelity.epochs:
            self.fidelity.min_epochs = self.fidelity.epochs
        return self

    # ---- derived ---------------------------------------------------------------------------
    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def strategies(self) -> list[str]:
        return [self.architecture.strategy] if isinstance(self.architecture.strategy, str) else list(self.architecture.strategy)

    def check_strategies(self, where: str) -> None:
        """Every strategy must exist and fit the stage range; otherwise say which and why."""
        from rknas.plugins import strategies

        known = strategies()
        names = self.strategies()
        for n in names:
            if n not in known:
                raise ConfigError(f"{where}: architecture.strategy: unknown stage strategy {n!r}; known: {', '.join(known)}")
        max_s = max(int(v) for v in _values(self.architecture.stages))
        usable = [n for n in names if known[n].min_stages <= max_s]
        if not usable:
            raise ConfigError(f"{where}: no listed strategy works with at most {max_s} stages (architecture.stages)")

    # (section, key, test, what is allowed) -- checked on every listed value or range end, so a
    # space that could propose an invalid network or optimiser fails at load, not in every trial.
    _ALLOWED = (
        ("architecture", "stages", lambda v: isinstance(v, (int, float)) and v >= 1 and float(v).is_integer(), "integers >= 1"),
        ("architecture", "k", lambda v: isinstance(v, (int, float)) and v >= 1 and float(v).is_integer(), "integers >= 1"),
        ("architecture", "steps", lambda v: isinstance(v, (int, float)) and v >= 1 and float(v).is_integer(), "integers >= 1"),
        ("architecture", "attention", lambda v: isinstance(v, bool), "true or false"),
        ("architecture", "multiscale", lambda v: isinstance(v, bool), "true or false"),
        ("architecture", "width", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "numbers > 0"),
        ("architecture", "dropout", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "numbers in [0, 1)"),
        ("training", "optimizer", lambda v: v in ("sgd", "adamw"), "'sgd' or 'adamw'"),
        ("training", "lr", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "numbers > 0"),
        ("training", "momentum", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "numbers in [0, 1)"),
        ("training", "weight_decay", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, "numbers >= 0"),
        ("training", "batch_size", lambda v: isinstance(v, (int, float)) and v >= 1 and float(v).is_integer(), "integers >= 1"),
        ("training", "label_smoothing", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1, "numbers in [0, 1)"),
    )

    def check_values(self, where: str) -> None:
        for section, key, ok, allowed in self._ALLOWED:
            param = getattr(getattr(self, section), key)
            values = _values(param)
            if not values:
                raise ConfigError(f"{where}: {section}.{key}: an empty list; allowed: {allowed}")
            bad = [v for v in values if not ok(v)]
            if bad:
                raise ConfigError(f"{where}: {section}.{key}: {bad[0]!r} is not allowed; allowed: {allowed}")

    def sample(self, trial) -> dict:
        """Define-by-run: suggest every searched value on an Optuna trial; return the constants."""
        from rknas.plugins import strategies

        known = strategies()
        arch = self.architecture
        fixed: dict[str, Any] = {}
        max_s = max(int(v) for v in _values(arch.stages))
        allowed = [n for n in self.strategies() if known[n].min_stages <= max_s]
        for p in range(1, arch.periods + 1):
            strat = _suggest(trial, f"p{p}_strategy", allowed, fixed)
            low_s = known[strat].min_stages
            stages_param = arch.stages
            if isinstance(stages_param, Range):
                stages_param = Range(low=max(stages_param.low, low_s), high=stages_param.high, step=stages_param.step or 1)
            elif isinstance(stages_param, list) and min(stages_param) < low_s:
                # Optuna's categorical choices may not change between trials under one name:
                # strategies that need more stages get their own parameter.
                value = _suggest(trial, f"p{p}_stages_min{low_s}", [s for s in stages_param if s >= low_s], fixed)
                fixed[f"p{p}_stages"] = value
                stages_param = None
            if stages_param is not None:
                _suggest(trial, f"p{p}_stages", stages_param, fixed, integer=True)
            _suggest(trial, f"p{p}_k", arch.k, fixed, integer=True)
            _suggest(trial, f"p{p}_steps", arch.steps, fixed, integer=True)
        for key in ("attention", "multiscale", "width", "dropout"):
            _suggest(trial, key, getattr(arch, key), fixed)
        tr = self.training
        for key in ("optimizer", "lr", "momentum", "weight_decay", "label_smoothing"):
            _suggest(trial, key, getattr(tr, key), fixed)
        _suggest(trial, "batch_size", tr.batch_size, fixed, integer=True)
        return fixed

    def configs(self, params: dict, seed: int = 0, epochs: Optional[int] = None) -> tuple[NetworkConfig, TrainConfig]:
        """The network and training configs of one trial's parameters."""
        arch, tr = self.architecture, self.training
        per = lambda name: [params[f"p{p}_{name}"] for p in range(1, arch.periods + 1)]  # noqa: E731
        network = NetworkConfig(
            framework=self.framework,
            strategy=per("strategy"),
            stages=[int(v) for v in per("stages")],
            k=[int(v) for v in per("k")],
            steps=[int(v) for v in per("steps")],
            classes=self.classes or 10,
            in_channels=self.in_channels,
            image_size=self.image_size,
            attention=bool(params["attention"]),
            multiscale=bool(params["multiscale"]),
            width=float(params["width"]),
            dropout=float(params["dropout"]),
        )
        training = TrainConfig(
            epochs=epochs or self.fidelity.epochs,
            batch_size=int(params["batch_size"]),
            optimizer=params["optimizer"],
            lr=float(params["lr"]),
            momentum=float(params["momentum"]),
            nesterov=tr.nesterov,
            weight_decay=float(params["weight_decay"]),
            schedule=tr.schedule,
            warmup_epochs=tr.warmup_epochs,
            label_smoothing=float(params["label_smoothing"]),
            bn_recalibrate=tr.bn_recalibrate,
            crop_pad=self.data.crop_pad,
            flip=self.data.flip,
            seed=seed,
        )
        return network, training


def _suggest(trial, name: str, param, fixed: dict, integer: bool = False):
    if isinstance(param, Range):
        if integer:
            value = trial.suggest_int(name, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
        else:
            value = trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)
        return value
    if isinstance(param, list):
        if len(param) == 1:
            fixed[name] = param[0]
            return param[0]
        return trial.suggest_categorical(name, param)
    fixed[name] = param
    return param


# ---- files -----------------------------------------------------------------------------------
def space_files() -> dict[str, tuple[Path, str]]:
    """Every known space: name -> (file, providing package)."""
    from rknas.plugins import search_space_sources

    found: dict[str, tuple[Path, str]] = {}
    for path, package in search_space_sources():
        files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
        for f in files:
            found.setdefault(f.stem, (f, package))
    local = Path.cwd() / "search_spaces"
    if local.is_dir():
        for f in sorted(local.glob("*.y*ml")):
            found.setdefault(f.stem, (f, "local"))
    return found


def resolve_space_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"search space file {p} does not exist")
        return p
    known = space_files()
    if name_or_path not in known:
        raise ConfigError(f"unknown search space {name_or_path!r}; known: {', '.join(sorted(known))} (or give a path to a .yaml file)")
    return known[name_or_path][0]


def load_space(name_or_path: str) -> SearchSpace:
    """Load and fully validate a space: schema, strategy names, and a buildable network."""
    from rknas.config import read_yaml

    path = resolve_space_path(name_or_path)
    raw = read_yaml(path)
    return parse_space(raw, str(path), default_name=path.stem)


def parse_space(raw: dict, where: str, default_name: str = "") -> SearchSpace:
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None
    if not space.name:
        space.name = default_name
    space.check_strategies(where)
    space.check_values(where)
    return space
