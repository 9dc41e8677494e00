"""Run a search: check the options, load the data, start Ray, let Tune run the trials.

The Optuna study in storage is the single source of truth: ``--trials N`` means "until the
study holds N finished trials", so re-running an interrupted command continues where it
stopped. Ray start-up lives in ``ray_env``, the Tune <-> Optuna adapter in ``searcher``,
one trial in ``objective``; this module only orchestrates them.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import optuna
import torch

from rknas._version import __version__
from rknas.data.core import TensorData, load_dataset, split
from rknas.data.download import ensure_dataset
from rknas.errors import ConfigError
from rknas.plugins import apply_plugin_env, plugin_env
from rknas.registry import list_strategies
from rknas.search import ray_env
from rknas.search.objective import pick_device, run_trial
from rknas.search.searcher import searcher_class, tune_callback
from rknas.search.space import SearchSpace, load_space
from rknas.storage import (
    StudyRecord,
    TrialRecord,
    accuracy_of,
    best_trial,
    fail_running,
    finished_trials,
    open_storage,
    storage_url,
    study_names,
    summarize,
)

EventSink = Callable[[str, dict], None]


@dataclass
class SearchOptions:
    """Everything ``rknas search`` takes; the library entry point is ``run_search(options)``.

    Attributes:
        space: A space name (``rknas spaces``) or a path to a YAML file.
        trials: The study ends with this many finished trials (interrupted ones do not count).
        study: Study name (default: the space's name).
        storage: SQLAlchemy URL (default: ``storage_url()``).
        address: Join this Ray cluster instead of starting a local one.
        cpus_per_trial: CPUs each trial holds.
        gpus_per_trial: GPUs each trial holds; fractions share a GPU.
        concurrency: Trials at once (default: what the resources allow).
        seed: Base seed: trial N trains with ``seed + N``; the sampler is seeded from it.
        epochs: Override the space's epochs per trial.
        timeout: Seconds after which no new trial starts.
        data_root: Where the data set's files are (overrides the space).
        early_stopping: Override the space's ASHA switch.
        download: Download the data set first when it is missing (torchvision's sets).
        on_event: Called with ``(kind, data)`` as the search goes (progress displays).
    """

    space: str
    trials: int
    study: Optional[str] = None
    storage: Optional[str] = None
    address: Optional[str] = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    concurrency: Optional[int] = None
    seed: int = 0
    epochs: Optional[int] = None
    timeout: Optional[float] = None
    data_root: Optional[str] = None
    early_stopping: Optional[bool] = None
    download: bool = False
    on_event: Optional[EventSink] = field(default=None, repr=False)


@dataclass
class SearchResult:
    """What a search run ended with.

    Attributes:
        study: The study's name.
        storage: Its storage URL.
        target: The requested number of finished trials.
        finished: Finished trials in the study now.
        started_now: Trials this run set out to add.
        interrupted: The run stopped before the target (Ctrl-C, SIGTERM).
        counts: Trials per state (interrupted apart).
        best: Number, values, accuracy, params and FLOPs of the best trial, if any.
    """

    study: str
    storage: str
    target: int
    finished: int
    started_now: int
    interrupted: bool
    counts: dict[str, int]
    best: Optional[dict[str, Any]]


class _Sink:
    """An event callback that pickles to a no-op (Tune pickles its callbacks and searcher to disk)."""

    def __init__(self, fn: Optional[EventSink]):
        self.fn = fn

    def __call__(self, kind: str, data: dict) -> None:
        if self.fn is not None:
            self.fn(kind, data)

    def __getstate__(self) -> dict:
        return {"fn": None}


# ---- preparation (everything that can fail fast, before Ray starts or storage changes) ------
def check_options(opts: SearchOptions) -> None:
    """Reject impossible options with the flag's name.

    Raises:
        ConfigError: The first impossible option.
    """
    if opts.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {opts.trials}")
    if opts.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial must be positive, got {opts.cpus_per_trial}")
    if opts.gpus_per_trial < 0:
        raise ConfigError(f"--gpus-per-trial must be >= 0, got {opts.gpus_per_trial}")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {opts.concurrency}")
    if opts.epochs is not None and opts.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {opts.epochs}")


def prepare(opts: SearchOptions) -> tuple[SearchSpace, str, str, optuna.storages.BaseStorage, Optional[optuna.Study]]:
    """Check options, load the space with the command's overrides, open the storage.

    Returns:
        ``(space, study name, storage URL, storage, existing study or None)``.

    Raises:
        ConfigError: Bad options or space, or an existing study with other objectives.
    """
    check_options(opts)
    space = load_space(opts.space)
    if opts.data_root:
        space.data.root = opts.data_root
    if opts.epochs:
        space.fidelity.epochs = opts.epochs
        space.fidelity.min_epochs = min(space.fidelity.min_epochs, opts.epochs)
    if opts.early_stopping is not None:
        space.fidelity.early_stopping = opts.early_stopping
    study_name = opts.study or space.name
    url = storage_url(opts.storage)
    storage = open_storage(url)
    existing = None
    if study_name in study_names(storage):
        existing = optuna.load_study(study_name=study_name, storage=storage)
        want = [d.upper() for d in space.directions]
        have = [d.name for d in existing.directions]
        have_metrics = StudyRecord.of(existing).metrics
        if want != have or (have_metrics and have_metrics != space.metrics):
            raise ConfigError(
                f"study {study_name!r} in {url} has objectives {have_metrics or have} ({', '.join(h.lower() for h in have)}), "
                f"but space {space.name!r} wants {space.metrics} ({', '.join(space.directions)}); use another --study name"
            )
    return space, study_name, url, storage, existing


def load_data(space: SearchSpace) -> tuple[TensorData, TensorData]:
    """The search's train/validation split (the test split is never searched on).

    Fills the space's ``classes``, ``in_channels`` and ``image_size`` from the data.
    """
    train_full, _test = load_dataset(space.data)
    train, val = split(train_full, space.data.val_fraction, space.data.split_seed, space.data.train_subset)
    space.classes = space.classes or train_full.classes
    space.in_channels = space.in_channels or train_full.in_channels
    space.image_size = space.image_size or train_full.image_size
    return train, val


def strategy_versions() -> dict[str, str]:
    """Strategy name -> "package version", recorded with each trial."""
    return {s.name: s.provider for s in list_strategies()}


def _trainable(config: dict, train: TensorData, val: TensorData, space_dict: dict,
               gpus: float = 0.0, cpus: float = 1.0, plugins: Optional[dict] = None) -> None:
    """What runs in a Ray worker for each trial."""
    from ray import tune

    if plugins is not None:
        apply_plugin_env(plugins)  # the same plugins as the driver, whatever the worker's environment
    torch.set_num_threads(max(1, int(cpus)))
    space = SearchSpace.model_validate(space_dict)
    run_trial(config, space, train, val, report=lambda m: tune.report(dict(m)), device=pick_device(gpus))


def _sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if len(space.objectives) > 1:
        return optuna.samplers.NSGAIISampler(population_size=10, seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=5, seed=seed)


def _scheduler(space: SearchSpace) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    f = space.fidelity
    if f.early_stopping and f.epochs > f.min_epochs:
        return ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max", max_t=f.epochs,
                             grace_period=f.min_epochs, reduction_factor=f.reduction_factor)
    return FIFOScheduler()


def run_search(opts: SearchOptions) -> SearchResult:
    """Run (or continue) a search until the study holds ``opts.trials`` finished trials.

    Args:
        opts: The search's options.

    Returns:
        How the run ended, with the study's counts and best trial.

    Raises:
        RknasError: Bad options, space, data or storage, or an unusable Ray cluster; raised
            before anything is written to the storage.
    """
    events = _Sink(opts.on_event)
    space, study_name, url, storage, existing = prepare(opts)
    if existing is not None:
        done = len(finished_trials(existing))
        if done >= opts.trials:
            events("already_done", {"finished": done, "target": opts.trials})
            return _result(existing, url, opts.trials, 0, False)
    ensure_dataset(space.data, download=opts.download)
    train, val = load_data(space)
    ray_env.start_ray(opts.address)
    concurrency = opts.concurrency or ray_env.check_resources(opts.cpus_per_trial, opts.gpus_per_trial)
    # Only now, with every check passed, is the storage written to.
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                directions=[optuna.study.StudyDirection[d.upper()] for d in space.directions])
    stale = fail_running(study, "interrupted: left RUNNING by an earlier search that was stopped")
    done = len(finished_trials(study))
    remaining = opts.trials - done
    if StudyRecord.of(study).space is None:
        record = StudyRecord(space_name=space.name, space=space.model_dump(mode="json"), metrics=space.metrics,
                             seed=opts.seed, rknas_version=__version__)
        for key, value in record.user_attrs().items():
            study.set_user_attr(key, value)

    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    # A new sampler seed on every resume, or the first proposals would repeat.
    sampler_seed = opts.seed + 7919 * len(study.trials)
    base_seed = opts.seed

    def define(trial: optuna.Trial) -> dict:
        fixed = space.sample(trial)
        fixed["seed"] = base_seed + trial.number
        return fixed

    multi = len(space.metrics) > 1
    modes = [("max" if d == "maximize" else "min") for d in space.directions]
    searcher = searcher_class()(
        space=define,
        metric=space.metrics if multi else space.metrics[0],
        mode=modes if multi else modes[0],
        sampler=_sampler(space, sampler_seed),
        study_name=study_name,
        storage=storage,
        rk_space=space,
        rk_versions=strategy_versions(),
        rk_events=events,
    )
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, train=train, val=val, space_dict=space.model_dump(mode="json"),
                             gpus=opts.gpus_per_trial, cpus=opts.cpus_per_trial, plugins=plugin_env()),
        {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial},
    )
    events("start", {"study": study_name, "storage": url, "finished": done, "target": opts.trials,
                     "remaining": remaining, "concurrency": concurrency, "stale": stale, "space": space.name})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
            scheduler=_scheduler(space),
            num_samples=remaining,
            reuse_actors=True,
            time_budget_s=opts.timeout,
        ),
        run_config=tune.RunConfig(
            name=f"rknas-{study_name}-{int(time.time())}",
            storage_path=os.path.join(tempfile.gettempdir(), f"rknas-tune-{os.getuid()}"),
            verbose=0,
            callbacks=[tune_callback(events, searcher)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    previous_term = signal.getsignal(signal.SIGTERM)
    if hasattr(signal, "SIGUSR1"):
        # Tune stops gracefully on SIGINT/SIGUSR1 but aborts on SIGTERM: route TERM to USR1.
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))
    try:
        tuner.fit()
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        searcher.flush_errors()
        left = fail_running(study, "interrupted: the search stopped before this trial finished")
    finished = len(finished_trials(study))
    interrupted = finished < opts.trials and not opts.timeout
    return _result(study, url, opts.trials, remaining, interrupted or bool(left and finished < opts.trials))


def _result(study: optuna.Study, url: str, target: int, started: int, interrupted: bool) -> SearchResult:
    t = best_trial(study)
    best = None
    if t is not None:
        record = TrialRecord.of(t)
        best = {"number": t.number, "values": t.values, "val_accuracy": accuracy_of(study, t),
                "params": record.params, "flops": record.flops}
    return SearchResult(
        study=study.study_name, storage=url, target=target, finished=len(finished_trials(study)),
        started_now=started, interrupted=interrupted, counts=summarize(study)["counts"], best=best,
    )
