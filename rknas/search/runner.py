"""Ray Tune runs the trials, Optuna proposes them, the Optuna study in SQL storage is the record.

The study is the single source of truth: ``--trials N`` means "until the study holds N
finished trials", so re-running an interrupted command continues where it stopped.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Optional

import optuna
from optuna.trial import TrialState

from rknas.errors import ConfigError, RknasError
from rknas.plugins import plugin_env
from rknas.search.space import SearchSpace, load_space
from rknas.storage import fail_running, finished_trials, open_storage, storage_url, study_names

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray binds to 127.0.0.1 on Linux with this


@dataclass
class SearchOptions:
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
    on_event: Optional[Callable[[str, dict], None]] = field(default=None, repr=False)


class _Sink:
    """An event callback that pickles to a no-op (Tune pickles its callbacks and searcher to disk)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, kind, data):
        if self.fn is not None:
            self.fn(kind, data)

    def __getstate__(self):
        return {"fn": None}


@dataclass
class SearchResult:
    study: str
    storage: str
    target: int
    finished: int
    started_now: int
    interrupted: bool
    counts: dict
    best: Optional[dict]


# ---- preparation (everything that can fail fast, before Ray starts or storage changes) ------
def prepare(opts: SearchOptions):
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
        have_metrics = existing.user_attrs.get("metrics")
        if want != have or (have_metrics and have_metrics != space.metrics):
            raise ConfigError(
                f"study {study_name!r} in {url} has objectives {have_metrics or have} ({', '.join(h.lower() for h in have)}), "
                f"but space {space.name!r} wants {space.metrics} ({', '.join(space.directions)}); use another --study name"
            )
    return space, study_name, url, storage, existing


def load_data(space: SearchSpace):
    from rknas.data.core import load_dataset, split

    train_full, _test = load_dataset(space.data)  # the test set is never used by the search
    train, val = split(train_full, space.data.val_fraction, space.data.split_seed, space.data.train_subset)
    space.classes = space.classes or train_full.classes
    space.in_channels = space.in_channels or train_full.in_channels
    space.image_size = space.image_size or train_full.image_size
    return train, val


# ---- Ray ---------------------------------------------------------------------------------------
def keep_ray_on_loopback() -> None:
    """Make a local Ray bind 127.0.0.1 only.

    Ray reads the switch into a module constant when it is imported: set the variable for the
    processes Ray starts, and the constant in case this process imported Ray already.
    """
    os.environ.update(LOOPBACK_ENV)
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def start_local_ray(num_cpus: Optional[int] = None, **kwargs) -> None:
    """A local Ray on 127.0.0.1 with its files under a temp folder of ours."""
    keep_ray_on_loopback()
    import ray

    temp = os.path.join(tempfile.gettempdir(), f"rknas-ray-{os.getuid()}")
    ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", _temp_dir=temp, **kwargs)


def start_ray(opts: SearchOptions):
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no experiment banner: rknas draws its own progress
    env_vars = {k: os.environ[k] for k in ("RKNAS_PLUGINS", "RKNAS_PLUGIN_MODULES", "PYTHONPATH") if k in os.environ}
    common = dict(
        logging_level=logging.ERROR,
        log_to_driver=False,
        include_dashboard=False,
        runtime_env={"env_vars": env_vars} if env_vars else None,
    )
    if opts.address:
        _check_reachable(opts.address)
    else:
        keep_ray_on_loopback()
    import ray

    if ray.is_initialized():
        return
    if opts.address:
        try:
            ray.init(address=opts.address, **common)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RknasError(f"cannot join the Ray cluster at {opts.address}: {first}") from None
        return
    start_local_ray(**common)


def _check_reachable(address: str) -> None:
    """Ray can wait minutes on a dead address; a plain TCP connect answers in seconds."""
    import socket

    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RknasError(f"--address {address!r} is not HOST:PORT (the head node's GCS address, e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise RknasError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def check_resources(opts: SearchOptions) -> int:
    """Fail fast where Ray would wait forever; return the default concurrency."""
    import ray

    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 0), res.get("GPU", 0)
    if opts.gpus_per_trial > 0 and gpus < opts.gpus_per_trial:
        raise RknasError(
            f"--gpus-per-trial {opts.gpus_per_trial} asked for, but the Ray cluster has {gpus:g} GPUs; use --gpus-per-trial 0"
        )
    if cpus < opts.cpus_per_trial:
        raise RknasError(f"--cpus-per-trial {opts.cpus_per_trial} asked for, but the Ray cluster has {cpus:g} CPUs")
    by_cpu = int(cpus // opts.cpus_per_trial)
    by_gpu = int(gpus // opts.gpus_per_trial) if opts.gpus_per_trial > 0 else by_cpu
    return max(1, min(by_cpu, by_gpu))


def _trainable(config, train=None, val=None, space_dict=None, gpus=0.0, cpus=1.0, plugins=None):
    """What runs in a Ray worker for each trial."""
    import torch
    from ray import tune

    from rknas.plugins import apply_plugin_env
    from rknas.search.objective import pick_device, run_trial

    if plugins is not None:
        apply_plugin_env(plugins)  # the same plugins as the driver, whatever the worker's environment

    torch.set_num_threads(max(1, int(cpus)))
    space = SearchSpace.model_validate(space_dict)
    run_trial(config, space, train, val, report=lambda m: tune.report(m), device=pick_device(gpus))


def _searcher_class():
    from ray.tune.search.optuna import OptunaSearch

    class StudySearch(OptunaSearch):
        """OptunaSearch that records what rknas needs in each Optuna trial.

        Early-stopped trials become PRUNED (Tune reports them as complete), trials that
        failed inside the objective become FAIL with their reason, and each trial keeps its
        per-epoch accuracy, size, wall time, configs and plugin versions as user attributes.
        """

        def __init__(self, *args, rk_space: SearchSpace, rk_versions: dict, rk_events=None, **kwargs):
            super().__init__(*args, **kwargs)
            self._rk_space = rk_space
            self._rk_versions = rk_versions
            self._rk_history: dict = defaultdict(list)
            self._rk_events = rk_events
            self._rk_configs: dict = {}
            self._pending_errors: dict = {}

        def suggest(self, trial_id):
            config = super().suggest(trial_id)
            if config is not None:
                self._rk_configs[trial_id] = dict(config)
            return config

        def save(self, checkpoint_path):
            """No searcher pickle: the Optuna study in storage is the resumable record."""

        def restore(self, checkpoint_path):
            """See ``save``: resuming reloads the study instead."""

        def on_trial_result(self, trial_id, result):
            if result.get("failed") or result.get("constraint_violation") or not result.get("epoch"):
                return
            self._rk_history[trial_id].append(result["val_accuracy"])
            if not isinstance(self.metric, list):
                self._ot_trials[trial_id].report(result["val_accuracy"], int(result["epoch"]))

        def on_trial_complete(self, trial_id, result=None, error=False):
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot = self._ot_trials[trial_id]
            space = self._rk_space
            result = result or {}
            history = self._rk_history.pop(trial_id, [])
            # Tune hands the last result only to on_trial_complete, not to on_trial_result.
            epoch = int(result.get("epoch", 0) or 0)
            if epoch > len(history) and not result.get("failed") and not result.get("constraint_violation"):
                history.append(result["val_accuracy"])
                if not isinstance(self.metric, list):
                    ot.report(result["val_accuracy"], epoch)
            params = self._rk_configs.pop(trial_id, None) or {**ot.params, **(result.get("config") or {})}
            attrs = {"val_accuracy_per_epoch": history, "seed": params.get("seed")}
            for key in ("params", "flops", "wall_time", "val_loss", "train_loss"):
                if key in result:
                    attrs[key] = result[key]
            try:
                network, training = space.configs(params, seed=int(params.get("seed", 0)))
                attrs["network"] = network.model_dump(mode="json")
                attrs["training"] = training.model_dump(mode="json")
                attrs["strategy_versions"] = {n: self._rk_versions.get(n, "?") for n in network.strategy}
            except Exception:
                pass
            epochs = int(result.get("epoch", 0) or 0)
            if error or result.get("failed"):
                state, values = TrialState.FAIL, None
                attrs["fail_reason"] = result.get("error") or "the trial's worker crashed (see the Ray logs)"
            elif result.get("constraint_violation"):
                state, values = TrialState.PRUNED, None
                attrs["constraint_violation"] = result["constraint_violation"]
            elif epochs < space.fidelity.epochs:
                state, values = TrialState.PRUNED, None
                attrs["pruned_at_epoch"] = epochs
            else:
                state = TrialState.COMPLETE
                values = [result[m] for m in space.metrics]
                values = values if isinstance(self.metric, list) else values[0]
            # Optuna's convention: <= 0 is feasible; constrained samplers steer away from the rest.
            for key, limit in (("params", space.constraints.max_params), ("flops", space.constraints.max_flops)):
                if limit is not None and key in result:
                    ot.set_constraint(f"max_{key}", (result[key] - limit) / limit)
            self._completed_trials.add(trial_id)
            if error and not result.get("failed"):
                # The worker died: Tune tells the searcher first and the callbacks (which can
                # read the error) right after, so the trial is recorded once the reason is in.
                self._pending_errors[trial_id] = (ot, attrs)
                return
            self._record(trial_id, ot, attrs, state, values)

        def record_error(self, trial_id, reason):
            if trial_id in self._pending_errors:
                ot, attrs = self._pending_errors.pop(trial_id)
                attrs["fail_reason"] = reason
                self._record(trial_id, ot, attrs, TrialState.FAIL, None)

        def flush_errors(self):
            for trial_id in list(self._pending_errors):
                self.record_error(trial_id, "the trial's worker crashed (see the Ray logs)")

        def _record(self, trial_id, ot, attrs, state, values):
            for k, v in attrs.items():
                ot.set_user_attr(k, v)
            try:
                self._ot_study.tell(ot, values, state=state)
            except Exception as exc:  # e.g. NaN: record as FAIL rather than lose the trial
                ot.set_user_attr("fail_reason", f"could not record result: {exc}")
                self._ot_study.tell(ot, None, state=TrialState.FAIL)
                state = TrialState.FAIL
            if self._rk_events:
                self._rk_events("trial_end", {"trial_id": trial_id, "number": ot.number, "state": state.name, "attrs": attrs, "values": values})

    return StudySearch


def _error_line(trial) -> str:
    """The most telling line of the error Tune saved for a trial."""
    try:
        text = open(trial.error_file).read() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "died" in ln.lower() or "exit" in ln.lower() or "killed" in ln.lower():
            return f"the trial's worker crashed: {ln[:300]}"
    return f"the trial's worker crashed: {lines[-1][:300]}" if lines else "the trial's worker crashed (see the Ray logs)"


def _tune_callback(events, searcher_ref):
    from ray.tune import Callback

    class Events(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            events("trial_start", {"trial_id": trial.trial_id})

        def on_trial_result(self, iteration, trials, trial, result, **info):
            events("trial_result", {"trial_id": trial.trial_id, "result": result})

        def on_trial_error(self, iteration, trials, trial, **info):
            searcher_ref.record_error(trial.trial_id, _error_line(trial))

    return Events()


def _sampler(space: SearchSpace, seed: int):
    if len(space.objectives) > 1:
        return optuna.samplers.NSGAIISampler(population_size=10, seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=5, seed=seed)


def strategy_versions() -> dict:
    from rknas.plugins import list_strategies

    return {s.name: s.provider for s in list_strategies()}


def run_search(opts: SearchOptions) -> SearchResult:
    """Run (or continue) a search until the study holds ``opts.trials`` finished trials."""
    events = _Sink(opts.on_event)
    space, study_name, url, storage, existing = prepare(opts)
    if existing is not None:
        done = len(finished_trials(existing))
        if done >= opts.trials:
            events("already_done", {"finished": done, "target": opts.trials})
            return _result(existing, url, opts.trials, 0, False)
    train, val = load_data(space)
    start_ray(opts)
    default_concurrency = check_resources(opts)
    concurrency = opts.concurrency or default_concurrency
    # Only now, with every check passed, is the storage written to.
    study = optuna.create_study(
        study_name=study_name, storage=storage, load_if_exists=True,
        directions=list(space.directions),
    )
    stale = fail_running(study, "interrupted: left RUNNING by an earlier search that was stopped")
    done = len(finished_trials(study))
    remaining = opts.trials - done
    from rknas import __version__

    if "space" not in study.user_attrs:
        study.set_user_attr("space_name", space.name)
        study.set_user_attr("space", space.model_dump(mode="json"))
        study.set_user_attr("metrics", space.metrics)
        study.set_user_attr("seed", opts.seed)
        study.set_user_attr("rknas_version", __version__)

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    versions = strategy_versions()
    # A new sampler seed on every resume, or the first proposals would repeat.
    sampler_seed = opts.seed + 7919 * (len(study.trials))
    base_seed = opts.seed

    def define(trial):
        fixed = space.sample(trial)
        fixed["seed"] = base_seed + trial.number
        return fixed

    StudySearch = _searcher_class()
    searcher = StudySearch(
        space=define,
        metric=space.metrics if len(space.metrics) > 1 else space.metrics[0],
        mode=[("max" if d == "maximize" else "min") for d in space.directions] if len(space.metrics) > 1
        else ("max" if space.directions[0] == "maximize" else "min"),
        sampler=_sampler(space, sampler_seed),
        study_name=study_name,
        storage=storage,
        rk_space=space,
        rk_versions=versions,
        rk_events=events,
    )
    if space.fidelity.early_stopping and space.fidelity.epochs > space.fidelity.min_epochs:
        scheduler = ASHAScheduler(
            time_attr="epoch", metric="val_accuracy", mode="max", max_t=space.fidelity.epochs,
            grace_period=space.fidelity.min_epochs, reduction_factor=space.fidelity.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
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
            scheduler=scheduler,
            num_samples=remaining,
            reuse_actors=True,
            time_budget_s=opts.timeout,
        ),
        run_config=tune.RunConfig(
            name=f"rknas-{study_name}-{int(time.time())}",
            storage_path=os.path.join(tempfile.gettempdir(), f"rknas-tune-{os.getuid()}"),
            verbose=0,
            callbacks=[_tune_callback(events, searcher)],
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


def _result(study, url, target, started, interrupted) -> SearchResult:
    from rknas.storage import accuracy_of, best_trial, summarize

    t = best_trial(study)
    best = None
    if t is not None:
        best = {"number": t.number, "values": t.values, "val_accuracy": accuracy_of(study, t),
                "params": t.user_attrs.get("params"), "flops": t.user_attrs.get("flops")}
    return SearchResult(
        study=study.study_name, storage=url, target=target, finished=len(finished_trials(study)),
        started_now=started, interrupted=interrupted, counts=summarize(study)["counts"], best=best,
    )
