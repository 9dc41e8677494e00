"""Every command's options, validated: one pydantic model per command, one field per flag.

A field carries its default, its constraint (``ge=``, ``gt=``, validators) and its help
(``Field(description=...)``); the CLI builds the command's flags from the fields
(``rknas.cli_flags``), and library users build the same models (``SearchOptions(space=...,
trials=...)``). A bad value raises ``ConfigError`` with one line that names the flag
(``--trials must be at least 1, got 0``), on construction and on assignment.

How a field appears on the command line is its name with dashes (``max_params`` ->
``--max-params``); a ``Flag`` in its ``Annotated`` metadata changes that (another spelling, a
short name, a ``--x/--no-x`` pair, a one-way switch, a unit in messages) or keeps the field off
the command line (``Flag(cli=False)``). Options several commands share are the typed aliases
below (``Study``, ``Storage``, ``Device``, ``DataRoot``, ``Json``, ``Download``).

Adding a flag to a command: one field here, and its use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rknas.errors import ConfigError
from rknas.events import EvaluationEvents, EventSink, SearchEvents
from rknas.storage.defaults import DEFAULT_RETRY_S
from rknas.storage.trial_storage import check_scheme


@dataclass(frozen=True)
class Flag:
    """How a field (or a shared alias) appears on the command line; put it in ``Annotated[...]``.

    Attributes:
        name: The flag, default ``--`` and the field's name with dashes; ``--x/--no-x`` for a bool pair.
        short: A short name, e.g. ``-o``.
        help: The help, instead of the field's description.
        cli: False: not on the command line (callbacks, library-only settings).
        switch: A one-way flag that sets the field to this value when given (``--no-early-stopping``
            sets ``early_stopping`` to False); absent, the field keeps its default.
        csv: The element type of a list field given as comma-separated text (``--stages 5,5,6``);
            other list fields are repeatable flags.
        unit: Said after a constraint in messages: ``must be at least 1 (seconds)``.
    """

    name: Optional[str] = None
    short: Optional[str] = None
    help: Optional[str] = None
    cli: bool = True
    switch: Optional[bool] = None
    csv: Optional[type] = None
    unit: Optional[str] = None


def merge_flags(metadata: Any) -> Flag:
    """The ``Flag`` of a field: every ``Flag`` in its metadata, later ones overriding what they set.

    Args:
        metadata: A field's ``Annotated`` metadata (``FieldInfo.metadata``).

    Returns:
        One ``Flag`` (the default one when there is none).
    """
    out: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, Flag):
            out.update({k: v for k, v in vars(m).items() if v != getattr(Flag, k)})
    return Flag(**out)


def flag_name(model: type[BaseModel], field: str) -> str:
    """The command-line spelling of a field: ``--max-params``; its name for a field off the command line.

    Args:
        model: The options model.
        field: The field's name.

    Returns:
        The flag (the first of a ``--x/--no-x`` pair), or the field's name.
    """
    info = model.model_fields.get(field)
    if info is None:
        return field
    flag = merge_flags(info.metadata)
    if not flag.cli:
        return field
    return (flag.name or "--" + field.replace("_", "-")).split("/")[0]


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bound(kind: str, ctx: dict[str, Any]) -> Optional[str]:
    """``must be ...`` for a numeric constraint, None for other errors."""
    if kind == "greater_than_equal":
        return "0 or more" if ctx["ge"] == 0 else f"at least {_show(ctx['ge'])}"
    if kind == "greater_than":
        return "positive" if ctx["gt"] == 0 else f"greater than {_show(ctx['gt'])}"
    if kind == "less_than_equal":
        return f"at most {_show(ctx['le'])}"
    if kind == "less_than":
        return f"less than {_show(ctx['lt'])}"
    return None


def option_error(model: type[BaseModel], exc: ValidationError) -> str:
    """One line for the first error of an options model, naming the flag.

    Args:
        model: The options model.
        exc: Its validation error.

    Returns:
        E.g. ``--trials must be at least 1, got 0``; a model validator's own message as it is.
    """
    err = exc.errors(include_url=False)[0]
    loc, ctx = err["loc"], err.get("ctx") or {}
    if not loc:  # a rule between fields: its message names the flags
        return str(ctx.get("error", err["msg"]))
    field = str(loc[0])
    where = flag_name(model, field) + "".join(f"[{p}]" for p in loc[1:] if isinstance(p, int))
    info = model.model_fields.get(field)
    unit = merge_flags(info.metadata).unit if info is not None else None
    bound = _bound(err["type"], ctx)
    if bound is not None:
        return f"{where} must be {bound}{f' ({unit})' if unit else ''}, got {_show(err['input'])}"
    if err["type"] == "value_error":
        return f"{where} {ctx['error']}"
    if err["type"] == "missing":
        return f"{where} is required"
    return f"{where}: {err['msg']}, got {err['input']!r}"


class CommandOptions(BaseModel):
    """Base of the options models: a bad value raises ``ConfigError`` (one line naming the flag).

    Construction and assignment are validated (``SearchOptions(trials=0)`` and
    ``opts.trials = 0`` both raise); unknown fields are refused.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(option_error(type(self), exc)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(option_error(type(self), exc)) from None


# ---- options several commands share --------------------------------------------------------
Study = Annotated[str, Field(description="The study's name.")]
Storage = Annotated[Optional[str], Field(description="SQLAlchemy URL (default sqlite:///studies/rknas.db).")]
Device = Annotated[Optional[str], Field(description="cpu or cuda (default: cuda if available).")]
DataRoot = Annotated[Optional[str], Field(
    description="Where the data set's files are (overrides the space's, study's or config's; see `rknas data list`).")]
Download = Annotated[bool, Field(description="Download the data set first if it is missing (see `rknas data list`).")]
Json = Annotated[bool, Field(description="Print JSON instead of a table."), Flag("--json")]
NOT_CLI = Flag(cli=False)


# ---- rknas search --------------------------------------------------------------------------
class SearchOptions(CommandOptions):
    """Everything ``rknas search`` takes; the library entry point is ``run_search(options)``.

    Each field's description is its help (``rknas search --help``); ``on_event`` is the
    library's alone: a listener (``rknas.events.SearchListener``) or a callable ``(kind, data)``.
    """

    space: str = Field(description="A space name (`rknas spaces`) or a path to a YAML file.")
    trials: int = Field(20, ge=1, description="The study ends with this many finished trials (re-run to continue).")
    study: Optional[str] = Field(None, description="Study name (default: the space name).")
    storage: Storage = None
    address: Optional[str] = Field(None, description="Join this Ray cluster instead of starting a local one.")
    trial_storage: Optional[str] = Field(
        None,
        description="Where Ray Tune keeps trial checkpoints (a retried trial resumes from them on any node): a folder "
                    "every node mounts, or a URI (s3://bucket/path, gs://bucket/path; an S3-compatible endpoint with "
                    "?endpoint_override=HOST:PORT&scheme=http). Default $RKNAS_TRIAL_STORAGE, else a temp folder, which "
                    "suits one machine only: on a cluster of several nodes the search checks before any trial that "
                    "every node sees it.")
    trial_filesystem: Annotated[Any, NOT_CLI] = Field(
        None, repr=False, description="A pyarrow filesystem for --trial-storage (which is then a path on it).")
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs each trial holds.")
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs each trial holds; fractions share a GPU (0.5 = two trials "
                                                         "per GPU).")
    concurrency: Optional[int] = Field(None, ge=1, description="Trials at once (default: what the resources allow).")
    seed: int = Field(0, description="Base seed: trial N trains with SEED + N; the sampler is seeded from it.")
    epochs: Optional[int] = Field(None, ge=1, description="Override the space's epochs per trial.")
    max_params: Optional[float] = Field(
        None, gt=0, description="Size limit (overrides the space's constraints): larger networks are pruned before training.")
    max_flops: Optional[float] = Field(None, gt=0, description="FLOPs limit (overrides the space's constraints).")
    timeout: Annotated[Optional[float], Flag(unit="seconds")] = Field(
        None, gt=0,
        description="Stop starting trials this many seconds after the command started; running trials finish "
                    "and are recorded, the command exits 0, and the same command again continues the study.")
    data_root: DataRoot = None
    early_stopping: Annotated[Optional[bool], Flag("--no-early-stopping", switch=False)] = Field(
        None, description="Train every trial for all its epochs (no ASHA).")
    download: Download = False
    start_from: list[str] = Field(
        default_factory=list,
        description="A model (`rknas models`) a new study runs first, after the space's start_from; or study:NAME[:N] "
                    "/ table:FILE[:N], the top N (default 5) networks of an earlier study or a bench table; repeatable.")
    allow_changes: bool = Field(
        False,
        description="Continue a study although the space, --epochs, --max-params/--max-flops, --seed or --no-early-stopping "
                    "differ from the ones it was started with (refused otherwise); the change is recorded as a new space "
                    "revision.")
    heartbeat_interval: Annotated[int, Flag(unit="seconds")] = Field(
        10, ge=1, description="Seconds between the heartbeats this process records for its running trials.")
    stale_after: Annotated[int, Flag(unit="seconds")] = Field(
        60,
        description="Seconds without a heartbeat after which a RUNNING trial of another `rknas search` is taken for dead "
                    "and recovered (FAIL, interrupted; it does not count).")
    max_retries: int = Field(
        2, ge=0,
        description="Times a trial whose worker died (killed, out of memory, node lost) runs again, from its last finished "
                    "epoch. Errors inside training are not retried.")
    storage_retry: Annotated[float, Flag(unit="seconds")] = Field(
        DEFAULT_RETRY_S, ge=0,
        description="Seconds to wait for a storage that went away (a database restart, a network blip, a locked SQLite "
                    "file) before stopping; results that arrive meanwhile are written when it is back.")
    table: Optional[Path] = Field(
        None,
        description="Answer every trial from a benchmark table (`rknas bench build`) instead of training it: the "
                    "architecture's nearest table entry, one of its seeds (drawn from the trial's seed), its recorded "
                    "curve played out at its recorded epoch times. Everything else is the real search (Ray Tune, ASHA, "
                    "the sampler, the storage, heartbeats, several drivers): for trying a strategy, a cluster or a "
                    "database at scale without the cost of training. The space must be the table's.")
    time_scale: float = Field(
        1.0, gt=0, description="With --table: the recorded epoch times are multiplied by this (0.01: a hundred times "
                               "faster).")
    on_event: Annotated[Union[SearchEvents, EventSink, None], NOT_CLI] = Field(
        None, repr=False, description="Where the search reports its progress (rknas.events).")

    @field_validator("trial_storage")
    @classmethod
    def _tune_opens_it(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else check_scheme(value)

    @model_validator(mode="after")
    def _stale_after_heartbeats(self) -> SearchOptions:
        if self.stale_after <= self.heartbeat_interval:
            raise ValueError(f"--stale-after ({self.stale_after}) must be longer than --heartbeat-interval "
                             f"({self.heartbeat_interval}), or live trials would be taken for dead")
        if self.time_scale != 1.0 and self.table is None:
            raise ValueError("--time-scale scales a table's recorded epoch times: give --table too, or leave it out")
        return self


# ---- rknas evaluate ------------------------------------------------------------------------
class EvaluateOptions(CommandOptions):
    """Everything ``rknas evaluate`` takes; the library entry point is ``rknas.evaluate.evaluate(options)``.

    ``store`` and ``on_event`` are the library's alone.
    """

    study: Study
    epochs: int = Field(ge=1, description="Epochs of every run (the schedule is scaled to them).")
    seeds: int = Field(3, ge=1, description="Runs per model, with seeds SEED .. SEED+N-1.")
    seed: int = Field(0, description="The first seed.")
    top: Optional[int] = Field(
        None, ge=1,
        description="The K completed trials with the best validation accuracy (default: 3; the Pareto set for a "
                    "multi-objective study).")
    pareto: bool = Field(False, description="The Pareto set instead of --top.")
    max_params: Optional[float] = Field(None, description="Finalists only among trials this small (equal-size comparisons).")
    max_flops: Optional[float] = Field(None, description="... and with at most this many FLOPs.")
    include: list[str] = Field(
        default_factory=list,
        description="Also evaluate a named model (`rknas models`) or a config file from `rknas best`; repeat it, or "
                    "separate by commas.")
    out: Optional[Path] = Field(None, description="Output folder (default runs/evaluate/<study>).")
    storage: Storage = None
    data_root: DataRoot = None
    device: Device = None
    threads: Optional[int] = Field(
        None, ge=1, description="Threads training uses (default: RKNAS_THREADS, else one per CPU this process may use). The "
                                "count changes a CPU run's sums, so it is recorded with the run.")
    store: Annotated[bool, NOT_CLI] = Field(True, description="Store the summary in the study (StudyRecord.evaluation).")
    on_event: Annotated[Union[EvaluationEvents, EventSink, None], NOT_CLI] = Field(
        None, repr=False, description="Where the evaluation reports its progress (rknas.events).")

    @field_validator("include", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        return split_commas(value)

    @model_validator(mode="after")
    def _top_or_pareto(self) -> EvaluateOptions:
        if self.top is not None and self.pareto:
            raise ValueError("--top and --pareto exclude each other")
        return self


# ---- rknas train ---------------------------------------------------------------------------
class TrainOptions(CommandOptions):
    """Everything ``rknas train`` takes; the library entry point is ``rknas.train.train_from_config``."""

    config: Path = Field(description="A config written by `rknas best`.")
    epochs: Optional[int] = Field(None, ge=1, description="Override the config's epochs.")
    out: Optional[Path] = Field(None, description="Output folder (default runs/<config name>).")
    resume: bool = Field(False, description="Continue from OUT/checkpoint.pt.")
    device: Device = None
    threads: Optional[int] = Field(
        None, ge=1, description="Threads training uses (default: RKNAS_THREADS, else one per CPU this process may use). The "
                                "count changes a CPU run's sums, so it is recorded with the run.")
    data_root: DataRoot = None
    download: Download = False


# ---- rknas bench ---------------------------------------------------------------------------
def split_commas(value: Any) -> Any:
    """A repeatable flag's values, each of which may hold several comma-separated ones."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)):
        return [r.strip() for item in value for r in str(item).split(",") if r.strip()]
    return value


class BenchBuildOptions(CommandOptions):
    """Everything ``rknas bench build`` takes; the library entry point is ``rknas.bench.build.build_table(options)``."""

    space: str = Field(description="A bench space (`rknas spaces`, e.g. fashion_mnist_bench) or a YAML file: its "
                                   "architecture knobs are drawn, its training section is the one recipe.")
    archs: int = Field(ge=1, description="Distinct architectures to draw (the space's start_from models count among them).")
    seeds: int = Field(2, ge=1, description="Training seeds per architecture.")
    epochs: Optional[int] = Field(None, ge=1, description="Epochs per run (default: the space's fidelity epochs).")
    out: Path = Field(description="The table file (.db); an interrupted build continues into it.")
    seed: int = Field(0, description="Seed of the architecture draw.")
    address: Optional[str] = Field(None, description="Join this Ray cluster instead of starting a local one.")
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs each run holds.")
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs each run holds; fractions share a GPU.")
    data_root: DataRoot = None
    download: Download = False
    on_event: Annotated[Any, NOT_CLI] = Field(None, repr=False, description="Called as (kind, data) with progress.")


class BenchReplayOptions(CommandOptions):
    """Everything ``rknas bench replay`` takes; the library entry point is ``rknas.bench.replay.run_replay(options)``."""

    table: Path = Field(description="A table written by `rknas bench build` (.db or .db.gz).")
    strategy: list[str] = Field(
        default_factory=list,
        description="A search strategy: a sampler (random, tpe, nsga2 or a plugin's) with +asha and/or +warm, e.g. "
                    "tpe+asha+warm; repeatable or comma-separated (default: random, random+asha, tpe, tpe+asha, "
                    "tpe+asha+warm; with --pareto: random, tpe, nsga2).")
    budget: Annotated[float, Flag(unit="seconds")] = Field(gt=0, description="Simulated wall time of each search.")
    workers: int = Field(4, ge=1, description="Trials that run at once in the simulated search.")
    repeats: int = Field(50, ge=1, description="Searches replayed per strategy (each with its own seeds).")
    trials: Optional[int] = Field(None, ge=1, description="Start at most this many trials per search (default: no cap).")
    pareto: bool = Field(False, description="Replay a two-objective search (validation accuracy, params); regret is "
                                            "hypervolume short of the table's true front.")
    min_epochs: Optional[int] = Field(None, ge=1, description="ASHA's first rung (default: the table space's fidelity).")
    reduction_factor: Optional[int] = Field(None, ge=2, description="ASHA's reduction factor (default: the table space's).")
    seed: int = Field(0, description="Base seed of the repeats.")
    target: float = Field(0.003, gt=0, description="Regret counted as reached (0.003 = 0.3 accuracy points).")
    judge: Literal["unseen", "all"] = Field(
        "unseen", description="unseen: each search observes half of every architecture's seeds and is judged on the "
                              "mean of the others; all: it observes every seed and is judged on all of them (the "
                              "ones it saw included, which flatters a lucky seed).")
    warm_from: Optional[Path] = Field(
        None, description="+warm starts from this other table's best architectures (by their mean over seeds) instead of "
                          "the space's start_from: transfer between data sets.")
    warm_top: int = Field(5, ge=1, description="How many of --warm-from's best architectures +warm starts from.")
    jobs: Optional[int] = Field(None, ge=1, description="Processes replaying in parallel (default: every CPU).")
    out: Optional[Path] = Field(None, description="Write OUT.json (every figure) and OUT.png (the plot).")
    as_json: Json = False
    on_event: Annotated[Any, NOT_CLI] = Field(None, repr=False, description="A BenchEvents listener, or a plain "
                                              "(kind, data) callable: told replay_repeat after each repeat.")

    @field_validator("strategy", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        return split_commas(value)


class BenchProxiesOptions(CommandOptions):
    """Everything ``rknas bench proxies`` takes; the library entry point is ``rknas.bench.proxies.measure_proxies``."""

    table: Path = Field(description="A table written by `rknas bench build` (.db or .db.gz).")
    batch: int = Field(64, ge=2, description="Images in the minibatch naswot and grad_norm see.")
    out: Optional[Path] = Field(None, description="Write every score and the ranking to this JSON file.")
    data_root: DataRoot = None
    download: Download = False
    as_json: Json = False


__all__ = ["BenchBuildOptions", "BenchProxiesOptions", "BenchReplayOptions",
           "CommandOptions", "DataRoot", "Device", "Download", "EvaluateOptions", "Flag", "Json", "SearchOptions", "Storage",
           "Study", "TrainOptions", "flag_name", "merge_flags", "option_error"]
