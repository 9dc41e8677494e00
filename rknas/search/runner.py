"""Run a search: load the data, start Ray, let Tune run the trials (options: ``rknas.options.SearchOptions``).

The Optuna study in storage is the single source of truth: ``--trials N`` means "until the
study holds N finished trials", so re-running an interrupted command continues where it
stopped. Ray start-up lives in ``ray_env``, the Tune <-> Optuna adapter in ``tune_adapter``,
trial states and the driver's share in ``searcher``, one trial in ``objective``, safe
resumption in ``resume``; this module only orchestrates them.

Any number of drivers (``rknas search`` processes, on one machine or several) may work on
one study at once: each starts trials only while the study's finished and running trials
(of all drivers) are short of the target, records heartbeats for its own running trials,
recovers the trials of drivers that died, and ends when the study holds the target. Each
driver runs Tune in rounds: when the other drivers' running trials fill the target it
waits outside Tune, and starts another round if they end short of it (a dead driver's).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna

from rknas.data.core import TensorData, load_dataset, split
from rknas.data.download import ensure_dataset
from rknas.errors import ConfigError
from rknas.events import SearchEvents, search_listener
from rknas.importance import keep_with_study
from rknas.options import SearchOptions
from rknas.plugins import plugin_env
from rknas.search import ray_env
from rknas.search.objective import pick_device, prepare_worker, run_trial
from rknas.search.outcome import EpochResult
from rknas.search.resume import plan_resume, seed_rungs, write_plan
from rknas.search.samplers import make_sampler, windowed
from rknas.search.searcher import Driver
from rknas.search.space import SearchSpace, load_space
from rknas.search.warmstart import enqueue_starts, start_params
from rknas.storage import (
    Heartbeats,
    StudyRecord,
    TrialRecord,
    best_trial,
    driver_id,
    interrupt_trials,
    open_storage,
    recover_stale,
    safe_url,
    storage_url,
    study_names,
    summarize,
)
from rknas.storage.backend import discard_new_sqlite, sqlite_file
from rknas.storage.bulk import counted, tally
from rknas.storage.racing import REPEAT_CONFIG_KEY, repeat_marker
from rknas.storage.retry import StorageUnavailable
from rknas.storage.trial_storage import TrialStorage
from rknas.strategies.lookup import list_strategies


@dataclass
class SearchResult:
    """What a search run ended with.

    Attributes:
        study: The study's name.
        storage: Its storage URL.
        target: The requested number of finished trials.
        finished: Finished trials in the study now.
        started_now: Trials this run started.
        interrupted: The run stopped before the target (Ctrl-C, SIGTERM).
        counts: Trials per state (interrupted apart).
        best: Number, values, accuracy, params and FLOPs of the best trial, if any.
        timed_out: ``--timeout`` stopped the run before the target (not an interruption:
            every trial it started finished and was recorded).
        failed_outside_training: Every trial this run recorded failed outside training (its
            worker, node or storage): the last such reason; None otherwise. The CLI exits 1.
    """

    study: str
    storage: str
    target: int
    finished: int
    started_now: int
    interrupted: bool
    counts: dict[str, int]
    best: Optional[dict[str, Any]]
    timed_out: bool = False
    failed_outside_training: Optional[str] = None


# ---- preparation (everything that can fail fast, before Ray starts or storage changes) ------
def prepare(opts: SearchOptions) -> tuple[SearchSpace, str, str, optuna.storages.BaseStorage, Optional[optuna.Study]]:
    """Load the space with the command's overrides, open the storage (the options are valid by construction).

    Returns:
        ``(space, study name, storage URL, storage, existing study or None)``.

    Raises:
        ConfigError: Bad options or space, or an existing study with other objectives.
    """
    space = load_space(opts.space)
    if opts.data_root:
        space.data.root = opts.data_root
    if opts.epochs:
        space.fidelity.epochs = opts.epochs
        space.fidelity.min_epochs = min(space.fidelity.min_epochs, opts.epochs)
    if opts.early_stopping is not None:
        space.fidelity.early_stopping = opts.early_stopping
    if opts.max_params is not None:
        space.constraints.max_params = opts.max_params
    if opts.max_flops is not None:
        space.constraints.max_flops = opts.max_flops
    study_name = opts.study or space.name
    url = storage_url(opts.storage)
    storage = open_storage(url, heartbeat_interval=opts.heartbeat_interval, grace_period=opts.stale_after,
                           retry_s=opts.storage_retry)
    existing = None
    if study_name in study_names(storage):
        existing = optuna.load_study(study_name=study_name, storage=storage)
        want = [d.upper() for d in space.directions]
        have = [d.name for d in existing.directions]
        have_metrics = StudyRecord.of(existing).metrics
        if want != have or (have_metrics and have_metrics != space.metrics):
            raise ConfigError(
                f"study {study_name!r} in {safe_url(url)} has objectives {have_metrics or have} "
                f"({', '.join(h.lower() for h in have)}), but space {space.name!r} wants {space.metrics} "
                f"({', '.join(space.directions)}); use another --study name"
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
    """What runs in a Ray worker for each trial.

    Each epoch's report carries the training state as a Tune checkpoint, so a trial whose
    worker died is restarted by Tune (``--max-retries``) from its last finished epoch.
    """
    from ray import tune

    space = prepare_worker(space_dict, plugins, cpus)
    with tempfile.TemporaryDirectory(prefix="rknas-trial-") as work:
        state = Path(work) / CHECKPOINT_FILE
        earlier = tune.get_checkpoint()
        if earlier is not None:  # a restart after the worker died
            with earlier.as_directory() as d:
                shutil.copy(Path(d) / CHECKPOINT_FILE, state)

        def report(m: EpochResult) -> None:
            trained = state.is_file() and int(m.get("epoch", 0)) > 0 and not m.get("diverged")
            tune.report(dict(m), checkpoint=tune.Checkpoint.from_directory(work) if trained else None)

        run_trial(config, space, train, val, report=report, device=pick_device(gpus), checkpoint=state)


CHECKPOINT_FILE = "checkpoint.pt"



def _sampler(space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    sampler: optuna.samplers.BaseSampler = windowed(make_sampler(space.sampler, seed, len(space.objectives)),
                                                    space.sampler_window)
    return sampler


def _trial_work(opts: SearchOptions, space: SearchSpace) -> Callable[[], Any]:
    """Load what the trials need (the data, or the table of ``--table``) and check it; returns
    what makes the Tune trainable, called once the study exists."""
    work: Callable[..., None]
    if opts.table is not None:  # trials answered from the table: no data to load
        from rknas.search.table_trials import open_table, table_trainable

        work = table_trainable
        kwargs: dict[str, Any] = {"bench": open_table(opts.table, space), "time_scale": opts.time_scale,
                                  "label": Path(str(opts.table)).name}
    else:
        ensure_dataset(space.data, download=opts.download)
        train, val = load_data(space)
        work = _trainable
        kwargs = {"train": train, "val": val, "gpus": opts.gpus_per_trial, "cpus": opts.cpus_per_trial}

    def make() -> Any:
        from ray import tune

        trainable = tune.with_parameters(work, space_dict=space.model_dump(mode="json"), plugins=plugin_env(), **kwargs)
        return tune.with_resources(trainable, {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial})

    make.val_images = len(kwargs["val"]) if "val" in kwargs else 0  # type: ignore[attr-defined]  # shown at the start
    return make


def make_scheduler(space: SearchSpace) -> Any:
    """The Tune scheduler of a space's fidelity: ASHA over epochs, or FIFO without early stopping.

    The benchmark replay uses this same object, so a replayed search stops what a real one would.
    """
    from ray.tune.schedulers import FIFOScheduler

    from rknas.search.tune_adapter import RepeatAwareASHA

    f = space.fidelity
    if f.early_stopping and f.epochs > f.min_epochs:
        # ASHA, except for racing's re-measurements, which run every epoch (rknas.storage.racing)
        return RepeatAwareASHA(time_attr="epoch", metric="val_accuracy", mode="max", max_t=f.epochs,
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
    started_at = Driver.now()  # --timeout counts from here
    events = search_listener(opts.on_event)
    new_file = sqlite_file(storage_url(opts.storage))
    new_file = None if new_file is None or new_file.exists() else new_file
    space, study_name, url, storage, existing = prepare(opts)
    if existing is not None:
        done = counted(existing)[0]
        if done >= opts.trials:
            events.already_done(finished=done, target=opts.trials)
            return _result(existing, url, opts.trials, 0, False)
    try:
        # A study continues only with what its trials meant so far, unless --allow-changes.
        plan = plan_resume(study_name, existing, space, opts.seed, opts.allow_changes)
        work = _trial_work(opts, space)
        # Warm-start entries are checked against the data too, before anything is written.
        starts = (start_params(space, storage=url)
                  + start_params(space, list(opts.start_from), where="--start-from", storage=url))
        trial_storage = TrialStorage.open(opts.trial_storage, opts.trial_filesystem)
        ray_env.start_ray(opts.address)
        concurrency = opts.concurrency or ray_env.check_resources(opts.cpus_per_trial, opts.gpus_per_trial)
        # On several nodes, every node that can run a trial must reach the checkpoints.
        trial_storage.check_nodes(opts.cpus_per_trial, opts.gpus_per_trial)
    except BaseException:  # refused (or interrupted) before the study exists: no empty database left behind
        discard_new_sqlite(storage, new_file)
        raise
    # Only now, with every check passed, is the storage written to.
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True,
                                directions=[optuna.study.StudyDirection[d.upper()] for d in space.directions])
    # Trials of drivers that died (no heartbeat for --stale-after s); live drivers' trials stay.
    stale = recover_stale(study)
    warm = enqueue_starts(study, starts) if existing is None else 0  # a new study's first trials
    done = counted(study)[0]
    remaining = opts.trials - done
    write_plan(study, plan, space, opts.seed)

    trainable = work()
    driver = Driver(driver_id(), opts.trials, Heartbeats(storage, opts.heartbeat_interval), revision=plan.revision,
                    deadline=None if opts.timeout is None else started_at + opts.timeout, events=events,
                    round_limit=ROUND_TRIALS)
    events.start(study=study_name, storage=safe_url(url), finished=done, target=opts.trials, remaining=remaining,
                 concurrency=concurrency, stale=len(stale), space=space.name, warm_start=warm, driver=driver.name,
                 revision=plan.revision, changes={k: list(v) for k, v in plan.changes.items()}, deadline=driver.deadline,
                 table="" if opts.table is None else f"table {opts.table} (recorded times x{opts.time_scale:g})",
                 val_images=getattr(work, "val_images", 0))
    interrupted = False
    try:
        with _GracefulSignals() as signals:
            while True:
                if driver.timed_out():
                    driver.stop_reason = "timeout"
                    break
                finished, running = driver.counts(study)
                events.progress(finished=finished, running=running, target=opts.trials)
                if finished >= opts.trials:
                    break
                if finished + running >= opts.trials:
                    # Other drivers' trials are in flight (or a dead driver's, until they go
                    # stale): wait for them outside Tune, then run what is still missing.
                    events.waiting(running=running, finished=finished, target=opts.trials)
                    time.sleep(WAIT_POLL_S)
                    continue
                with signals.tune() as round_signals:
                    _tune_round(opts, space, study, storage, trainable, driver, concurrency, events, trial_storage)
                if round_signals.received:
                    interrupted = True
                    break
                if driver.stop_reason == "timeout":
                    break
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while waiting between Tune rounds
        interrupted = True
    finally:
        driver.heartbeats.stop()
    if not interrupted:  # a large study's report then reuses them (seconds, once, here)
        keep_with_study(study)
    finished = counted(study)[0]
    timed_out = driver.stop_reason == "timeout" and finished < opts.trials  # SearchResult.timed_out says it
    out = _result(study, url, opts.trials, driver.started_count, interrupted and finished < opts.trials, timed_out)
    out.failed_outside_training = driver.all_failed_outside_training()
    return out


WAIT_POLL_S = 1.0  # how often a driver waiting for other drivers' trials looks at the study
# Trials one Tune run starts at most (Driver.new_round): a driver's memory and CPU per trial stay
# flat however long the search. A round's end waits for its last trials, so rounds stay long.
ROUND_TRIALS = 1000
# Tune settings of a round, where the user set none: rknas records every result in the study and
# resumes from it, so Tune's own per-trial logs (JSON, CSV, TensorBoard) and its experiment
# snapshots are work nobody reads, and the loggers keep every finished trial in memory.
TUNE_ENV = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "TUNE_GLOBAL_CHECKPOINT_S": str(10**9)}
OWN_LEFT = "interrupted: the search that ran it stopped before the trial finished"


def driver_storage(storage: optuna.storages.BaseStorage, window: Optional[int]) -> optuna.storages.BaseStorage:
    """The storage a round's searcher asks, tells and samples through.

    With a sampler window, a cache of the recent trials only (``RecentTrialsCache``): Optuna's
    own would hold every trial of the study in the driver's memory. Without one, the sampler
    reads every finished trial anyway, and Optuna's cache (which it puts around a database
    storage) is what keeps that read incremental.
    """
    from optuna.storages import RDBStorage

    from rknas.storage.recent import RecentTrialsCache

    if window is None or not isinstance(storage, RDBStorage):
        return storage
    return RecentTrialsCache(storage, keep=window)


def first_seed(study: optuna.Study, number: int, base_seed: int) -> int:
    """The seed trial ``number`` of ``study`` trained with (its record), for a repeat of its configuration."""
    storage = study._storage
    try:  # one trial read by its number, not the whole study
        seed = TrialRecord.of(storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))).seed
    except KeyError:  # not in this study (a repeat enqueued by hand)
        seed = None
    return int(seed) if seed is not None else base_seed + number


def _tune_round(opts: SearchOptions, space: SearchSpace, study: optuna.Study, storage: optuna.storages.BaseStorage,
                trainable: Any, driver: Driver, concurrency: int, events: SearchEvents,
                trial_storage: TrialStorage) -> None:
    """Let Tune run trials until the driver admits no more and this driver's trials ended, or a signal.

    The searcher asks the study before each trial (``Driver.admit``), so Tune's sample count
    is unbounded; ASHA starts from the study's earlier learning curves (``seed_rungs``). The
    trials this driver started and did not finish (Ctrl-C, SIGTERM) are marked interrupted,
    and only those. Whether a signal ended the round is ``_GracefulSignals.received``.
    """
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from rknas.search.tune_adapter import StudySearch, TrialEvents

    # A new sampler seed on every round and resume, or the first proposals would repeat.
    sampler_seed = opts.seed + 7919 * sum(tally(study).values())
    base_seed = opts.seed

    def define(trial: optuna.Trial) -> dict:
        fixed = space.sample(trial)
        fixed["seed"] = base_seed + trial.number  # a repeat (racing) is a trial too: its own seed
        marker = repeat_marker(trial.user_attrs)
        if marker is not None and marker[1]:
            # runs every epoch, outside ASHA (tune_adapter.RepeatAwareASHA); a table-backed trial
            # also reads which recorded run its configuration's first trial played
            fixed[REPEAT_CONFIG_KEY] = {"first_seed": first_seed(trial.study, marker[0], base_seed), "repeat": marker[1]}
        return fixed

    multi = len(space.metrics) > 1
    modes = [("max" if d == "maximize" else "min") for d in space.directions]
    searcher = StudySearch(
        space=define,
        metric=space.metrics if multi else space.metrics[0],
        mode=modes if multi else modes[0],
        sampler=_sampler(space, sampler_seed),
        study_name=study.study_name,
        storage=driver_storage(storage, space.sampler_window),
        rk_space=space,
        rk_versions=strategy_versions(),
        rk_events=events,
        rk_driver=driver,
        rk_max_retries=opts.max_retries,
    )
    scheduler = make_scheduler(space)
    seed_rungs(scheduler, study, space)
    driver.new_round()
    name = f"rknas-{study.study_name}-{int(time.time())}-{driver.name.rsplit(':', 1)[-1]}"
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
            scheduler=scheduler,
            num_samples=-1,  # the searcher ends the round (see Driver.admit)
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            **trial_storage.tune_kwargs(),  # checkpoints every node reaches (see rknas.storage.trial_storage)
            verbose=0,
            callbacks=[TrialEvents(events, searcher)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # A worker that died (killed, out of memory, node lost) is an infrastructure failure:
            # Tune runs the trial again from its last epoch. Errors inside training are reported
            # as results (never raised), so they are not retried.
            failure_config=tune.FailureConfig(max_failures=opts.max_retries),
        ),
    )
    try:
        tuner.fit()
    except Exception as exc:
        lost = _storage_unavailable(exc)
        if lost is None:
            raise
        raise lost from None  # the study is intact; this driver's running trials are recovered as stale later
    finally:
        with contextlib.suppress(StorageUnavailable):  # with the storage away, nothing more can be recorded
            searcher.flush_errors()
            left = interrupt_trials(study, searcher.unfinished(), OWN_LEFT)
            for trial_id in searcher.unfinished():
                driver.heartbeats.remove(trial_id)
            if left:
                events.interrupted_trials(numbers=left)
        trial_storage.remove(name)  # rknas resumes from the study, never from Tune's experiment folder


def _storage_unavailable(exc: BaseException) -> Optional[StorageUnavailable]:
    """The ``StorageUnavailable`` behind an error Tune raised, if that is what it was."""
    seen: set[int] = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StorageUnavailable):
            return e
        e = e.__cause__ or e.__context__
    return None


class _GracefulSignals:
    """SIGINT and SIGTERM stop a search gracefully, inside Tune and between its rounds.

    Between rounds both raise ``KeyboardInterrupt``. Inside ``tune()`` rknas keeps SIGINT
    (``TUNE_DISABLE_SIGINT_HANDLER``) and handles both itself: it records the stop in
    ``received``, then calls the handler Tune put on SIGUSR1, Tune's graceful stop (Tune aborts
    on SIGTERM). The round's result comes from ``received``, never from why the driver stopped
    admitting trials: a Ctrl-C during a round's last trials was lost that way. A signal before
    Tune has set up its handler, or a second one, raises ``KeyboardInterrupt``. The previous
    handlers come back on exit. Signals can only be handled in the main thread: elsewhere this
    does nothing.
    """

    NAMES = ("SIGINT", "SIGTERM", "SIGUSR1")

    def __init__(self) -> None:
        self.in_tune = False
        self.received = False
        self.active = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1")
        self.previous: dict[str, Any] = {}

    def _between(self, signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def _in_tune(self, signum: int, frame: Any) -> None:
        first = not self.received
        self.received = True
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if not first or not callable(tune_stop) or tune_stop == self._between:
            raise KeyboardInterrupt  # Tune is not running its loop yet, or the user insists
        tune_stop(signal.SIGUSR1, frame)

    def _install(self) -> None:
        if self.active:
            handler = self._in_tune if self.in_tune else self._between
            signal.signal(signal.SIGINT, handler)
            signal.signal(signal.SIGTERM, handler)
            # Tune's SIGUSR1 handler of an earlier round stays installed: clear it, so that a
            # signal before this round's Tune sets up its own is not sent to a finished run.
            signal.signal(signal.SIGUSR1, self._between)

    def __enter__(self) -> _GracefulSignals:
        if self.active:
            self.previous = {n: signal.getsignal(getattr(signal, n)) for n in self.NAMES}
        self._install()
        return self

    def __exit__(self, *exc: Any) -> None:
        for n, handler in self.previous.items():
            signal.signal(getattr(signal, n), handler)

    @contextlib.contextmanager
    def tune(self) -> Iterator[_GracefulSignals]:
        """The block in which Tune runs; ``received`` says whether a signal stopped it."""
        self.in_tune = True
        self.received = False
        self._install()
        settings = {k: v for k, v in TUNE_ENV.items() if k not in os.environ}  # the user's settings win
        settings["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        saved = {k: os.environ.get(k) for k in settings}
        os.environ.update(settings)
        try:
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            self.in_tune = False
            self._install()


def _result(study: optuna.Study, url: str, target: int, started: int, interrupted: bool,
            timed_out: bool = False) -> SearchResult:
    t = best_trial(study, lean=True)  # its values and size: no network needed
    summary = summarize(study)
    best = None
    if t is not None:
        record = TrialRecord.of(t)
        # with racing, the mean over the configuration's runs, as `rknas best` reports it
        best = {"number": t.number, "values": t.values, "val_accuracy": summary["best_val_accuracy"],
                "runs": summary["best_runs"], "params": record.params, "flops": record.flops}
    return SearchResult(
        study=study.study_name, storage=url, target=target, finished=counted(study)[0],
        started_now=started, interrupted=interrupted, counts=summary["counts"], best=best,
        timed_out=timed_out,
    )
