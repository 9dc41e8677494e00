"""The configuration schemas and reading config files: pydantic only, no torch.

What a network, a training run, a data set and a size limit are (``NetworkConfig``,
``TrainConfig``, ``DataSpec``, ``SizeLimit``) lives here, apart from the torch code that
builds, trains, loads and counts them (``rknas.models.network``, ``rknas.train``,
``rknas.data``, ``rknas.models.counting``, which import these names back). Reading a space,
a study or an exported config therefore never pays for importing torch.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rknas.errors import ConfigError

Framework = Literal["cifar", "mnist"]  # the paper's two pre/postprocessor layouts (Tables 1 and 2)
# The norm of each framework's feature maps (RKCNN's postprocessor and MNIST preprocessor), told to blocks as BlockSpec.norm.
FRAMEWORK_NORM = {"cifar": "batch", "mnist": "group"}
DEFAULTS = {
    # framework: (in_channels, image_size, attention, multiscale)
    "cifar": (3, 32, True, True),
    "mnist": (1, 28, False, False),
}
# memory_efficient=None: recomputation (off the CPU) from this many stages, where it cuts the
# activation memory to <= 0.39x (2.5x less); see benchmarks/RESULTS.md.
MEMORY_EFFICIENT_MIN_STAGES = 4


def _as_list(v):
    if v is None:
        return None
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    if isinstance(v, (int, float)):
        return [v]
    return list(v)


class NetworkConfig(BaseModel):
    """Everything that determines an RKCNN. Per-period lists of length 1 apply to every period;
    the number of periods is the longest list."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    framework: Framework = "cifar"
    strategy: list[str] = Field(default_factory=lambda: ["I"])
    stages: list[int] = Field(default_factory=lambda: [2])
    k: list[int] = Field(default_factory=lambda: [32])
    steps: list[int] = Field(default_factory=lambda: [1])
    classes: int = 10
    in_channels: Optional[int] = None
    image_size: Optional[int] = None
    attention: Optional[bool] = None
    multiscale: Optional[bool] = None
    width: float = 1.0
    dropout: float = 0.0
    memory_efficient: Optional[bool] = Field(
        None,
        description=(
            "Recompute each PreActUnit's concatenation, BNs and ReLUs in backward instead of storing them "
            "(same results, params and FLOPs; not part of the name). None: on for periods with "
            f"stages >= {MEMORY_EFFICIENT_MIN_STAGES} when training off the CPU; off on the CPU, where it "
            "was measured at about 1.3x step time."
        ),
    )
    """Trade step time for activation memory in deep dense stages.

    Storing every unit's concatenation makes activation memory grow quadratically in the stages
    s; recomputing it makes it grow linearly. Measured on CPU (benchmarks/RESULTS.md, live
    tensors after the forward pass, RKCNN-I-s_s_s k=48 batch 32): 0.58x the plain memory at s=2,
    0.45x at s=3, 0.39x at s=4, 0.35x at s=5, for 1.2-1.4x the step time; RKCNN-I-5_5_5 k=80
    batch 32: 0.35x live memory (0.49-0.51x peak RSS) at 1.30-1.39x step time. Hence None turns
    it on only from s=4 (2.5x less memory) and only off the CPU, where memory, not time, limits
    the batch and the model (to be confirmed with benchmarks/gpu.sh).
    """

    @field_validator("strategy", "stages", "k", "steps", mode="before")
    @classmethod
    def _listify(cls, v):
        return _as_list(v)

    @model_validator(mode="after")
    def _check(self):
        lists = {"strategy": self.strategy, "stages": self.stages, "k": self.k, "steps": self.steps}
        for key, val in lists.items():
            if not val:
                raise ValueError(f"{key} must not be empty")
        periods = max(len(v) for v in lists.values())
        for key, val in lists.items():
            if len(val) not in (1, periods):
                lens = ", ".join(f"{k}={len(v)}" for k, v in lists.items())
                raise ValueError(f"per-period lists must have 1 or {periods} entries ({lens})")
            if len(val) == 1 and periods > 1:
                setattr(self, key, val * periods)
        if any(k <= 0 for k in self.k):
            raise ValueError(f"k must be positive, got {self.k}")
        if any(s < 1 for s in self.stages):
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if any(r < 1 for r in self.steps):
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.classes < 1:
            raise ValueError(f"classes must be >= 1, got {self.classes}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")
        c, size, att, ms = DEFAULTS[self.framework]
        self.in_channels = c if self.in_channels is None else self.in_channels
        self.image_size = size if self.image_size is None else self.image_size
        self.attention = att if self.attention is None else self.attention
        self.multiscale = ms if self.multiscale is None else self.multiscale
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        sizes = spatial_sizes(self.framework, self.image_size, self.periods)
        # GroupNorm with one channel per group over a 1x1 map outputs zeros: mnist needs >= 2x2.
        if min(sizes) < (2 if self.framework == "mnist" else 1):
            raise ValueError(
                f"image size {self.image_size} is too small for the {self.framework} framework with "
                f"{self.periods} period(s) (feature maps would be {sizes}); use larger images or fewer periods"
            )
        return self

    @property
    def periods(self) -> int:
        return len(self.k)

    def memory_efficient_in(self, period: int) -> Union[bool, Literal["auto"]]:
        """The ``PreActUnit.memory_efficient`` setting of period ``period`` (0-based).

        Args:
            period: index of the period.

        Returns:
            ``memory_efficient`` when set; else "auto" (recompute when training off the CPU) for a
            period with at least ``MEMORY_EFFICIENT_MIN_STAGES`` stages, False otherwise.
        """
        if self.memory_efficient is not None:
            return self.memory_efficient
        return "auto" if self.stages[period] >= MEMORY_EFFICIENT_MIN_STAGES else False

    @property
    def name(self) -> str:
        """Paper-style name: RKCNN-I-5_5_6 (mixed strategies: RKCNN-I_I_R-2_2_2)."""
        strat = self.strategy[0] if len(set(self.strategy)) == 1 else "_".join(self.strategy)
        stages = "_".join(map(str, self.stages))
        return f"RKCNN-{strat}-{stages}"


def spatial_sizes(framework: str, image_size: int, periods: int) -> list[int]:
    """Feature-map side length in each period."""
    if framework == "mnist":
        s = image_size - 2  # conv3x3, no padding
        s = (s + 2 - 4) // 2 + 1 if s >= 2 else 0  # conv4x4 stride 2 padding 1
        s = (s + 2 - 4) // 2 + 1 if s >= 2 else 0
    else:
        s = image_size
    sizes = [s]
    for _ in range(periods - 1):
        s //= 2
        sizes.append(s)
    return sizes


def format_validation_error(exc: ValidationError, where: str = "", model: Optional[type[BaseModel]] = None) -> str:
    """One line for a pydantic error, in rknas's words: ``FILE: training.lr: low (0.3) must be <= high (0.02)``.

    Keys are dotted paths into the file; pydantic's internals (union member tags such as
    ``function-after[_check(), Range]``, "Value error, ") are left out; of the alternatives a
    value may take, the one whose own check failed is reported; an unknown key names the
    closest known one when ``model`` says which keys exist.

    Args:
        exc: The validation error.
        where: What was being read (a file, a space, a trial), said first.
        model: The model validated, for "did you mean" on unknown keys.

    Returns:
        The message.
    """
    groups: dict[str, list[Any]] = {}
    unknown: dict[tuple, list[str]] = {}  # parent path -> keys that are not settings there
    for err in exc.errors(include_url=False):
        # pydantic names the alternatives of a union in the path (int, function-after[...]): not keys
        loc = tuple(p for p in err["loc"] if isinstance(p, int) or (str(p).isidentifier() and p not in UNION_TAGS))
        if err["type"] == "extra_forbidden" and loc:
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            continue
        groups.setdefault(".".join(map(str, loc)), []).append((loc, err))
    parts = [_unknown_keys(parent, keys, model) for parent, keys in unknown.items()]
    for key, errs in groups.items():
        own = [(loc, e) for loc, e in errs if e["type"] == "value_error"]  # a validator said why
        kinds = [EXPECTED.get(e["type"]) for _, e in errs]
        if own:
            text = _error_message(*own[0], model)
        elif len(errs) > 1 and all(kinds):  # no alternative of a union fits: say what would
            text = f"expected {' or '.join(dict.fromkeys(k for k in kinds if k))}, got {errs[0][1]['input']!r}"
        else:
            text = " or ".join(dict.fromkeys(_error_message(loc, e, model) for loc, e in errs))
        parts.append(f"{key}: {text}" if key else text)
    prefix = f"{where}: " if where else ""
    return prefix + "; ".join(parts)


UNION_TAGS = frozenset({"bool", "int", "float", "str", "list", "dict", "tuple", "set", "none"})
EXPECTED = {  # pydantic's error type -> what the value should have been, in words
    "bool_type": "true/false", "bool_parsing": "true/false", "int_type": "an integer", "int_parsing": "an integer",
    "int_from_float": "an integer", "float_type": "a number", "float_parsing": "a number", "string_type": "text",
    "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "literal_error": "one of the allowed values",
}


def _unknown_keys(parent: tuple, keys: list[str], model: Optional[type[BaseModel]]) -> str:
    """``training.batch_sise: not a setting, did you mean batch_size?``; several at once name the known ones."""
    known = _keys_at(model, parent) if model is not None else []
    prefix = "".join(f"{p}." for p in parent)
    if len(keys) == 1:
        close = difflib.get_close_matches(keys[0], known, n=1)
        hint = f", did you mean {close[0]}?" if close else f" (known: {', '.join(known)})" if known else ""
        return f"{prefix}{keys[0]}: not a setting{hint}"
    shown = ", ".join(prefix + k for k in keys)
    return f"{shown}: not settings" + (f" (known: {', '.join(known)})" if known else "")


def _error_message(loc: tuple, err: Any, model: Optional[type[BaseModel]]) -> str:
    kind = err["type"]
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "missing":
        return "is required"
    return f"{str(err['msg'])[0].lower()}{str(err['msg'])[1:]}, got {err['input']!r}"


def _keys_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the model found at ``loc`` inside ``model`` (empty when it is not a model)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_in(field.annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Optional[type[BaseModel]]:
    """The pydantic model an annotation holds (``Optional[M]``, ``list[M]``, ``Union[M, ...]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


class TrainConfig(BaseModel):
    """Optimiser, schedule and batch settings for one training run."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[float] = [0.5, 0.75]
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    bn_recalibrate: bool = True
    crop_pad: int = Field(0, ge=0)
    flip: bool = False
    seed: int = 0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Autocast dtype of forward passes. auto: bf16 on CUDA devices that support it, else fp32.
    fp16 scales the loss (GradScaler). Weights, optimiser state, counts and configs stay fp32."""
    channels_last: Optional[bool] = None
    """NHWC memory format for model and batches. None: on for CUDA (faster convolutions with
    cuDNN, especially under bf16/fp16), off on CPU."""


class DataSpec(BaseModel):
    """Which data set, where its files are, and how the search splits it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    root: Optional[str] = None
    val_fraction: float = Field(0.2, gt=0, lt=1)
    train_subset: Optional[int] = Field(None, ge=1)
    split_seed: int = 0
    crop_pad: int = Field(0, ge=0)
    flip: bool = False
    options: dict = {}


class SizeLimit(BaseModel):
    """Limits on a network's size: the one definition of "fits" for search, best, evaluate.

    A search space's ``constraints`` section is one; ``--max-params`` / ``--max-flops`` make one.
    """

    model_config = ConfigDict(extra="forbid")
    max_params: Optional[float] = None
    max_flops: Optional[float] = None

    def violation(self, params: Optional[int], flops: Optional[int]) -> Optional[str]:
        """Why a network of this size breaks the limits, or None if it fits.

        Args:
            params: Its parameter count (None counts as 0: unknown sizes are not held against it).
            flops: Its FLOPs (likewise).

        Returns:
            A phrase such as ``params 90,000 > max_params 78,410``, or None.
        """
        params, flops = params or 0, flops or 0
        if self.max_params is not None and params > self.max_params:
            return f"params {params:,} > max_params {int(self.max_params):,}"
        if self.max_flops is not None and flops > self.max_flops:
            return f"FLOPs {flops:,} > max_flops {int(self.max_flops):,}"
        return None

    def admits(self, params: Optional[int], flops: Optional[int]) -> bool:
        """Whether a network of this size fits (see ``violation``)."""
        return self.violation(params, flops) is None

    def constraint_values(self, params: Optional[int], flops: Optional[int]) -> dict[str, float]:
        """Optuna's constraint values (<= 0 feasible) for the sizes that are known and limited.

        Args:
            params: The parameter count, or None if unknown.
            flops: The FLOPs, or None if unknown.

        Returns:
            ``{"max_params": (params - limit) / limit, ...}``: relative excess per limit.
        """
        sizes = (("max_params", params, self.max_params), ("max_flops", flops, self.max_flops))
        return {name: (size - limit) / limit for name, size, limit in sizes if size is not None and limit is not None}

    @property
    def unlimited(self) -> bool:
        """No limit is set."""
        return self.max_params is None and self.max_flops is None

    def __str__(self) -> str:
        limits = [f"{v:,.0f} {what}" for v, what in ((self.max_params, "params"), (self.max_flops, "FLOPs")) if v is not None]
        return " and ".join(limits) or "no limit"


def model_name(config: NetworkConfig) -> str:
    """The timm-style name of a configuration.

    Args:
        config: A validated network configuration.

    Returns:
        E.g. ``"rkcnn_i_5_5_6_k150_120_120"``, ``"rkcnn_e_2_mnist_k24"`` or, mixed and with two
        time steps in the last period, ``"rkcnn_i_r_i_2_2_2_k32_r1_1_2"``.
    """
    strategies = config.strategy if len(set(config.strategy)) > 1 else config.strategy[:1]
    parts = ["rkcnn", *(s.lower() for s in strategies), *map(str, config.stages)]
    if config.framework == "mnist":
        parts.append("mnist")
    ks = config.k if len(set(config.k)) > 1 else config.k[:1]
    parts.append("k" + "_".join(map(str, ks)))
    if any(r != 1 for r in config.steps):
        parts.append("r" + "_".join(map(str, config.steps)))
    return "_".join(parts)


def network_summary(config: NetworkConfig, params: int, flops: int) -> dict[str, Any]:
    """What ``rknas describe`` and ``rknas models`` show of a network: its paper-style name, every
    setting, params and FLOPs (counted by ``rknas.models.counting``, or read from the shipped table)."""
    return {"name": config.name, "framework": config.framework, "periods": config.periods, "strategy": config.strategy,
            "stages": config.stages, "k": config.k, "steps": config.steps, "classes": config.classes,
            "in_channels": config.in_channels, "image_size": config.image_size, "attention": config.attention,
            "multiscale": config.multiscale, "width": config.width, "dropout": config.dropout, "params": params,
            "flops": flops}


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
