"""Evaluate finalists: train them from scratch at one budget, with several seeds, on the test split.

A search ranks trials by validation accuracy at a short fidelity. ``evaluate`` answers the
question that matters afterwards: which of them (and how do the paper's named models compare)
is best when trained properly? Every model trains on the data set's whole training split (the
search's train + validation), for the same epochs, with the same recipe, once per seed, and is
scored on the test split, which the search never saw.

The recipe is one for all: the training settings of the study's best trial (optimiser, learning
rate, weight decay, batch size, schedule, warm-up, augmentation), with the epochs and the seed
of the evaluation; the schedule is scaled to those epochs. Those settings are the best the search
found for this data set, and named models have no searched settings of their own, so every
model, finalist or not, gets the same; a difference in test accuracy is then the architecture's.

Each finished run is written to ``OUT/runs/<name>/seed<k>/metrics.json`` (atomically); an
unfinished run keeps a per-epoch checkpoint next to it. The same call again skips finished runs
and resumes unfinished ones, so an interrupted evaluation continues where it stopped.
"""

from __future__ import annotations

import datetime
import difflib
import json
import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from rknas._version import __version__
from rknas.config import DataSpec, NetworkConfig, SizeLimit, TrainConfig, format_validation_error, load_network_section
from rknas.data.source import DataFacts, describe_dataset
from rknas.errors import ConfigError, RknasError
from rknas.events import EvaluationEvents, EventSink, evaluation_listener
from rknas.models.registry import list_models, model_config
from rknas.options import EvaluateOptions
from rknas.report import plot_evaluation
from rknas.storage import StudyRecord, TrialRecord, accuracy_of, best_trial, candidates, full, open_study, storage_url
from rknas.storage.bulk import load_trials, pareto_front
from rknas.storage.queries import accuracy_index
from rknas.util import differences, plural, torch_threads, training_threads, usable_device, write_json_atomic

if TYPE_CHECKING:
    from rknas.data.core import TensorData

# torch (2 s to import here) and the images load when the first run trains: planning, and its
# refusals, take neither where the data set can describe itself (DataSource.describe)

RECIPE_NOTE = (
    "every model trains with the training settings of the study's best trial (recipe_trial), "
    "with the evaluation's epochs and seed, on the data set's whole training split"
)


@dataclass
class ModelResult:
    """One evaluated model: what it is, its size, and its test accuracy per seed.

    Attributes:
        name: Unique name; also the folder of its runs (``trial_12``, a registered name, a file stem).
        source: ``trial`` (a finalist of the study), ``model`` (a registered name) or ``config`` (a file).
        architecture: The paper-style name, e.g. ``RKCNN-I-3``.
        network: The full ``NetworkConfig`` as JSON.
        params: Parameter count.
        flops: FLOPs of one forward pass.
        seeds: The seeds, one run each.
        test_accuracy: Test accuracy of each run, in the order of ``seeds``.
        trial: The trial number when ``source`` is ``trial``.
        ref: The registered name or the config file, for ``model`` and ``config``.
        search_val_accuracy: The validation accuracy the trial reported during the search.
    """

    name: str
    source: str
    architecture: str
    network: dict[str, Any]
    params: int
    flops: int
    seeds: list[int]
    test_accuracy: list[float] = field(default_factory=list)
    trial: Optional[int] = None
    ref: Optional[str] = None
    search_val_accuracy: Optional[float] = None

    @property
    def mean(self) -> float:
        """Mean test accuracy over the seeds."""
        return statistics.fmean(self.test_accuracy)

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1) of the test accuracy; 0 with one seed."""
        return statistics.stdev(self.test_accuracy) if len(self.test_accuracy) > 1 else 0.0

    def summary(self) -> dict[str, Any]:
        """The small form stored in the study: no network config, no paths."""
        out: dict[str, Any] = {"name": self.name, "source": self.source, "architecture": self.architecture,
                               "params": self.params, "flops": self.flops, "test_accuracy": self.test_accuracy,
                               "mean": self.mean, "std": self.std}
        if self.trial is not None:
            out["trial"] = self.trial
        if self.ref is not None:
            out["ref"] = self.ref
        return out

    def to_json(self) -> dict[str, Any]:
        """Everything, for ``evaluation.json``."""
        out = self.summary()
        out.update(seeds=self.seeds, search_val_accuracy=self.search_val_accuracy, network=self.network)
        return out


@dataclass
class Evaluation:
    """The result of ``evaluate``.

    Attributes:
        study: The study's name.
        storage: Its storage URL.
        data: The data set's name and the number of training and test images.
        epochs: Epochs of every run.
        seeds: Seeds of every model.
        recipe_trial: The trial whose training settings every run used.
        recipe: Those settings (``TrainConfig`` as JSON, without epochs and seed).
        models: One result per model: finalists first (best first), then the included ones.
        out: The output folder.
        trained: Runs trained by this call.
        skipped: Runs found finished and skipped.
        json_path: ``OUT/evaluation.json``.
        plot_path: ``OUT/evaluation.png``.
        note: Set when the study keeps a more thorough evaluation as the one it uses.
    """

    study: str
    storage: str
    data: dict[str, Any]
    epochs: int
    seeds: list[int]
    recipe_trial: int
    recipe: dict[str, Any]
    models: list[ModelResult]
    out: Path
    trained: int = 0
    skipped: int = 0
    json_path: Optional[Path] = None
    plot_path: Optional[Path] = None
    evaluated_at: str = ""
    note: Optional[str] = None

    def noise(self) -> dict[str, Any]:
        """The seed spread pooled over the models, and each model's distance from the best.

        Returns:
            ``sigma`` (pooled seed std of test accuracy; None with one seed), ``df``,
            ``seeds_for_delta`` (seeds to tell 0.3 points apart) and ``vs_best``: per model
            name, its mean minus the best mean and whether that is inside the seed spread.
        """
        from rknas.bench.noise import noise_summary, within_noise

        out = noise_summary([m.test_accuracy for m in self.models])
        best = max((m.mean for m in self.models if m.test_accuracy), default=None)
        out["vs_best"] = {m.name: {"difference": m.mean - best,
                                   "within_noise": within_noise(m.mean - best, out["sigma"], len(m.test_accuracy))}
                          for m in self.models if m.test_accuracy and best is not None}
        return out

    def summary(self) -> dict[str, Any]:
        """The small summary stored with the study (one of ``StudyRecord.evaluations``)."""
        return {"epochs": self.epochs, "seeds": self.seeds, "recipe_trial": self.recipe_trial,
                "data": self.data, "out": str(self.out), "evaluated_at": self.evaluated_at,
                "models": [m.summary() for m in self.models], "noise": self.noise()}

    def to_json(self) -> dict[str, Any]:
        """The content of ``evaluation.json``."""
        return {"study": self.study, "storage": self.storage, "data": self.data, "epochs": self.epochs,
                "seeds": self.seeds, "recipe": {"from_trial": self.recipe_trial, "training": self.recipe, "note": RECIPE_NOTE},
                "evaluated_at": self.evaluated_at, "rknas_version": __version__,
                "models": [m.to_json() for m in self.models], "noise": self.noise()}


@dataclass
class _Entry:
    """A model to evaluate, resolved and checked against the data, before anything is trained."""

    name: str
    source: str
    network: NetworkConfig
    trial: Optional[int] = None
    ref: Optional[str] = None
    search_val_accuracy: Optional[float] = None
    counts: Optional[tuple[int, int]] = None  # (params, FLOPs) known without building it: recorded or shipped


def select_finalists(
    study: optuna.Study,
    top: Optional[int] = None,
    pareto: bool = False,
    max_params: Optional[float] = None,
    max_flops: Optional[float] = None,
    pool: Optional[list[FrozenTrial]] = None,
) -> list[FrozenTrial]:
    """The trials to evaluate.

    Args:
        study: The study.
        top: The ``top`` completed trials with the highest validation accuracy.
        pareto: The Pareto set instead (single objective: the best trial, ties included).
            Neither: the Pareto set of a multi-objective study, else the top 3.
        max_params: Only trials with at most this many parameters (compare at equal size).
        max_flops: Only trials with at most this many FLOPs.
        pool: ``storage.candidates(study)`` when read already (one objective): the finalists
            follow its order, which is ``rknas best``'s (racing's rule; ties to fewer parameters).

    Returns:
        Completed trials of distinct networks, most accurate first: a trial whose network a
        more accurate trial has is left out (with one recipe, its runs would be the same runs).

    Raises:
        RknasError: Both ``top`` and ``pareto``, ``top`` < 1, or no completed trial (within
            the limits).
    """
    if top is not None and pareto:
        raise RknasError("--top and --pareto exclude each other")
    if top is not None and top < 1:
        raise RknasError(f"--top must be at least 1, got {top}")
    complete = load_trials(study, states=(TrialState.COMPLETE,)) if pool is None or pareto else pool
    if not complete:
        raise RknasError(f"study {study.study_name!r} has no completed trial to evaluate")

    limit = SizeLimit(max_params=max_params, max_flops=max_flops)
    complete = [t for t in complete if limit.admits(TrialRecord.of(t).params, TrialRecord.of(t).flops)]
    if not complete:
        raise RknasError(f"no completed trial of study {study.study_name!r} has at most {limit}")
    i = accuracy_index(study)
    if pool is not None and not pareto and len(study.directions) == 1:
        # the pool's order: best's (racing's rule, ties to fewer params); read whole as far as needed
        return _first_distinct(study, complete, top or 3)
    else:
        by_accuracy = _distinct_networks(sorted(complete, key=lambda t: (-t.values[i], t.number)))
    if pareto or (top is None and len(study.directions) > 1):
        front = {t.number for t in pareto_front(complete, study.directions)}
        return [t for t in by_accuracy if t.number in front]
    return by_accuracy[: top or 3]


def _first_distinct(study: optuna.Study, ranked: list[FrozenTrial], n: int, chunk: int = 50) -> list[FrozenTrial]:
    """The first ``n`` trials of distinct networks in ``ranked`` (possibly lean), read whole.

    Only the networks are read while looking, in chunks that double (thousands of tied trials
    of a few networks are common in a long search), then the kept trials whole.
    """
    seen: set[str] = set()
    kept: list[FrozenTrial] = []
    i = 0
    while i < len(ranked) and len(kept) < n:
        part = ranked[i:i + chunk]
        nets = {t.number: t.user_attrs.get("network")
                for t in load_trials(study, trial_ids=[t._trial_id for t in part], user_keys=("network",))}
        for t in part:
            key = json.dumps(nets.get(t.number), sort_keys=True)
            if key not in seen:
                seen.add(key)
                kept.append(t)
                if len(kept) == n:
                    break
        i += len(part)
        chunk = min(2 * chunk, 2000)  # each read stays small however many trials tie
    return full(study, kept)


def _distinct_networks(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The first trial of each network: with one recipe, a second trial of it would repeat its runs."""
    seen: set[str] = set()
    kept = []
    for t in trials:
        key = json.dumps(TrialRecord.of(t).network, sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append(t)
    return kept


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def _shape(c: Optional[int], s: Optional[int]) -> str:
    return f"{c}x{s}x{s}"


def resolve_include(ref: str, data: Union[DataFacts, TensorData], data_name: str) -> tuple[NetworkConfig, str]:
    """The network of an ``--include`` entry, checked against the data set.

    Args:
        ref: A registered model name (``rknas models``) or a config file (``rknas best -o FILE``,
            or any YAML with a ``network:`` section).
        data: The data set's facts, or its training split (for channels, image size and classes).
        data_name: The data set's name, for messages.

    Returns:
        ``(network, source)``: a registered model gets the data set's number of classes (its
        head); a config file is taken as it is. ``source`` is ``model`` or ``config``.

    Raises:
        ConfigError: An unknown name (close matches listed), an unreadable file, or a network
            whose input or classes do not fit the data set.
    """
    path = Path(ref)
    is_file = path.suffix in (".yaml", ".yml", ".json") or path.is_file() or os.sep in ref
    if is_file:
        from rknas.models.network import parse_network_config

        network = parse_network_config(load_network_section(path))
        source = "config"
    else:
        known = list_models()
        if ref not in known:
            close = difflib.get_close_matches(ref, known, n=5, cutoff=0.6)
            hint = f"close matches: {', '.join(close)}" if close else "see `rknas models`"
            raise ConfigError(f"unknown model {ref!r} in --include; {hint} (or give a config file written by `rknas best`)")
        network = model_config(ref, classes=data.classes)
        source = "model"
    want, have = _shape(network.in_channels, network.image_size), _shape(data.in_channels, data.image_size)
    if want != have:
        raise ConfigError(f"{ref}: the network expects {want} inputs, data set {data_name!r} has {have} images; "
                          "it does not fit this study's data")
    if network.classes != data.classes:
        raise ConfigError(f"{ref}: the network has {network.classes} classes, data set {data_name!r} has {data.classes}")
    return network, source


def _unique(name: str, taken: set[str]) -> str:
    base, n = _safe(name), 2
    out = base
    while out in taken:
        out, n = f"{base}-{n}", n + 1
    taken.add(out)
    return out


def _spec(network: NetworkConfig, training: TrainConfig, data: dict[str, Any]) -> dict[str, Any]:
    """What makes a run the same run: a finished one with this spec is skipped."""
    return {"network": network.model_dump(mode="json"), "training": training.model_dump(mode="json"), "data": data}


def _read_json(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def evaluate(options: EvaluateOptions) -> Evaluation:
    """Train finalists and named models from scratch with several seeds and score them on the test split.

    Every check (study, trials, names, fit to the data, options, earlier runs in ``out``) passes
    before anything is written. Finished runs found in ``out`` with the same settings are
    skipped; an unfinished one resumes from its last epoch.

    Args:
        options: The evaluation's options (``rknas.options.EvaluateOptions``: study, epochs, seeds,
            finalists, includes, output folder, storage, data root, device, ``store`` the summary
            in the study, ``on_event``: an ``rknas.events.EvaluationListener`` or a callable ``(kind, data)``).

    Returns:
        The evaluation; ``OUT/evaluation.json`` and ``OUT/evaluation.png`` are written.

    Raises:
        RknasError: Bad options, an unknown study, no completed trial, an unknown or unfitting
            model, or runs in ``out`` that were made with other settings.
    """
    # A device asked for is checked first; the default one (CUDA if torch sees it) after planning,
    # which writes nothing and needs no torch where the data set describes itself.
    device = usable_device(options.device) if options.device is not None else None
    plan = plan_evaluation(options)
    if any(r.finished is None for r in plan.runs):
        with torch_threads(training_threads(options.threads)):
            trained = run_evaluation(plan, device or usable_device(None), options.on_event)
    else:  # every run finished: no device to find, no torch to import
        trained = run_evaluation(plan, "", options.on_event)
    return publish_evaluation(plan, trained, store=options.store)


@dataclass
class _Run:
    """One training run of the plan: a model, a seed, its settings and folder, and its metrics if it finished."""

    entry: _Entry
    seed: int
    cfg: TrainConfig
    run_dir: Path
    spec: dict[str, Any]
    finished: Optional[dict[str, Any]]


@dataclass
class EvaluationPlan:
    """Everything ``evaluate`` will do, checked, before anything is written (``plan_evaluation``).

    Attributes:
        study: The study.
        url: Its storage URL.
        epochs: Epochs of every run.
        seeds: The seeds of every model.
        recipe_trial: The trial whose training settings every run uses.
        recipe: Those settings.
        data: Name and sizes of the data set (train = the whole training split).
        data_spec: The data set's name, root and options (the study's, with ``--data-root``).
        facts: Its sizes and image shape, from ``DataSource.describe`` or from loading it.
        out: The output folder.
        runs: Every run, finished ones with their metrics.
        results: Per model (by name): what it is and its size; test accuracies are added as runs end.
        loaded: ``(train, test)`` once loaded (by planning when the set cannot describe itself,
            else by ``load_data`` before the first run trains); None until then.
        train: The training split, loaded on first use (``load_data``).
        test: The test split, likewise.
    """

    study: optuna.Study
    url: str
    epochs: int
    seeds: list[int]
    recipe_trial: int
    recipe: TrainConfig
    data: dict[str, Any]
    data_spec: DataSpec
    facts: DataFacts
    out: Path
    runs: list[_Run]
    results: dict[str, ModelResult]
    loaded: Optional[tuple[TensorData, TensorData]] = field(default=None, repr=False)

    def load_data(self) -> tuple[TensorData, TensorData]:
        """The training and test splits, loaded once and checked against the facts planned with.

        Raises:
            ConfigError: The data set cannot be loaded, or its loader disagrees with what its
                ``describe`` said (a plugin's bug, or files changed since planning).
        """
        if self.loaded is None:
            from rknas.data.core import load_dataset

            train, test = load_dataset(self.data_spec)
            found = DataFacts.of(train, test)
            if found != self.facts:
                raise ConfigError(f"data set {self.data_spec.name!r} loaded as {found}, but it was described as "
                                  f"{self.facts}; its describe() and load() disagree (or its files changed meanwhile)")
            self.loaded = train, test
        return self.loaded

    @property
    def train(self) -> TensorData:
        return self.load_data()[0]

    @property
    def test(self) -> TensorData:
        return self.load_data()[1]


def _recipe(st: optuna.Study, best: Optional[FrozenTrial] = None) -> tuple[int, TrainConfig]:
    """The best trial's number and training settings: the one recipe of the evaluation."""
    recipe_from = best if best is not None else best_trial(st)
    assert recipe_from is not None  # select_finalists raised otherwise
    training = TrialRecord.of(recipe_from).training
    if training is None:
        raise RknasError(f"trial {recipe_from.number} of study {st.study_name!r} has no recorded training config")
    try:
        return recipe_from.number, TrainConfig.model_validate(training)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"trial {recipe_from.number}'s training")) from None


def _data_spec(st: optuna.Study, data_root: Optional[str]) -> DataSpec:
    space = StudyRecord.of(st).space or {}
    if "data" not in space:
        raise RknasError(f"study {st.study_name!r} has no recorded search space (was it made by `rknas search`?)")
    try:
        data_spec = DataSpec.model_validate(space["data"])
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"study {st.study_name!r}'s data")) from None
    if data_root:
        data_spec.root = data_root
    return data_spec


def _entries(st: optuna.Study, finalists: list[FrozenTrial], include: Sequence[str], facts: DataFacts,
             data_name: str) -> list[_Entry]:
    taken: set[str] = set()
    entries: list[_Entry] = []
    for t in finalists:
        r = TrialRecord.of(t)
        if r.network is None:
            raise RknasError(f"trial {t.number} of study {st.study_name!r} has no recorded network config")
        counts = (r.params, r.flops) if r.params and r.flops else None  # the trial counted them as evaluate does
        entries.append(_Entry(_unique(f"trial_{t.number}", taken), "trial", NetworkConfig.model_validate(r.network),
                              trial=t.number, search_val_accuracy=accuracy_of(st, t), counts=counts))
    for ref in dict.fromkeys(include):
        network, source = resolve_include(ref, facts, data_name)
        stem = Path(ref).stem if source == "config" else ref
        shipped = None
        if source == "model":
            from rknas.models.named import models
            from rknas.models.sizes import shipped_counts

            shipped = shipped_counts(ref, network, models()[ref].package)
        entries.append(_Entry(_unique(stem, taken), source, network, ref=ref, counts=shipped))
    return entries


def _runs(entries: list[_Entry], seed_list: list[int], recipe: TrainConfig, epochs: int, data: dict[str, Any],
          out: Path) -> list[_Run]:
    """Every run, with its earlier metrics; a folder holding a run with other settings is refused."""
    runs = []
    for e in entries:
        for s in seed_list:
            cfg = recipe.model_copy(update={"epochs": epochs, "seed": s})
            run_dir = out / "runs" / e.name / f"seed{s}"
            spec = _spec(e.network, cfg, data)
            for name in ("metrics.json", "spec.json"):
                old = _read_json(run_dir / name)
                old_spec = (old or {}).get("spec") if name == "metrics.json" else old
                if old_spec is not None and old_spec != spec:
                    diffs = "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in list(differences(old_spec, spec).items())[:3])
                    raise RknasError(f"{run_dir} holds a run with other settings ({diffs}); "
                                     "pass another --out, or delete that folder to redo it")
            runs.append(_Run(e, s, cfg, run_dir, spec, _read_json(run_dir / "metrics.json")))
    return runs


def plan_evaluation(options: EvaluateOptions) -> EvaluationPlan:
    """Check everything ``evaluate`` needs and say what it will run; nothing is written.

    Args:
        options: The evaluation's options (``device``, ``store`` and ``on_event`` are not used here).

    Returns:
        The plan (see ``EvaluationPlan``).

    Raises:
        RknasError: Bad options, an unknown study, no completed trial, an unknown or unfitting
            model, or runs in ``out`` that were made with other settings.
    """
    study, epochs, seeds, seed = options.study, options.epochs, options.seeds, options.seed
    url = storage_url(options.storage)
    st = open_study(study, url)
    try:
        pool: Optional[list[FrozenTrial]] = candidates(st, lean=True) if len(st.directions) == 1 else None
    except RknasError:  # no completed trial: select_finalists says so in its words
        pool = None
    finalists = full(st, select_finalists(st, top=options.top, pareto=options.pareto, max_params=options.max_params,
                                          max_flops=options.max_flops, pool=pool))
    recipe_trial, recipe = _recipe(st, full(st, pool[:1])[0] if pool else None)
    data_spec = _data_spec(st, options.data_root)
    facts, loaded = describe_dataset(data_spec), None
    if facts is None:  # the source cannot describe itself: load it now
        from rknas.data.core import load_dataset

        loaded = load_dataset(data_spec)
        facts = DataFacts.of(*loaded)
    data = {"name": data_spec.name, "train_images": facts.train_images, "test_images": facts.test_images}
    entries = _entries(st, finalists, options.include, facts, data_spec.name)
    out = Path(options.out or Path("runs") / "evaluate" / _safe(study))
    seed_list = [seed + i for i in range(seeds)]
    runs = _runs(entries, seed_list, recipe, epochs, data, out)
    results: dict[str, ModelResult] = {}
    for e in entries:
        if e.counts is None:
            from rknas.models.counting import count_network

            e.counts = count_network(e.network)
        results[e.name] = ModelResult(
            name=e.name, source=e.source, architecture=e.network.name, network=e.network.model_dump(mode="json"),
            params=e.counts[0], flops=e.counts[1], seeds=seed_list, trial=e.trial,
            ref=e.ref, search_val_accuracy=e.search_val_accuracy,
        )
    return EvaluationPlan(study=st, url=url, epochs=epochs, seeds=seed_list, recipe_trial=recipe_trial, recipe=recipe,
                          data=data, data_spec=data_spec, facts=facts, out=out, runs=runs, results=results, loaded=loaded)


def run_evaluation(plan: EvaluationPlan, device: str,
                   events: Union[EvaluationEvents, EventSink, None] = None) -> int:
    """Train every unfinished run of the plan (finished ones are read back); test accuracies go into ``plan.results``.

    Args:
        plan: What ``plan_evaluation`` returned.
        device: Where to train.
        events: Told ``start``, ``run_start``, ``epoch``, ``run_end`` (``rknas.events.EvaluationEvents``):
            a listener, a callable ``(kind, data)``, or None.

    Returns:
        How many runs were trained now.
    """
    emit = evaluation_listener(events)
    emit.start(study=plan.study.study_name, runs=len(plan.runs), done=sum(r.finished is not None for r in plan.runs),
               models=len(plan.results), seeds=plan.seeds, epochs=plan.epochs, out=str(plan.out),
               recipe_trial=plan.recipe_trial, device=device)
    if any(r.finished is None for r in plan.runs):
        plan.load_data()  # before the first run's folder is written; none when every run is done
    trained = 0
    for run in plan.runs:
        e, metrics = run.entry, run.finished
        if metrics is None:
            emit.run_start(name=e.name, seed=run.seed, epochs=plan.epochs)
            metrics = _train_run(e, run.cfg, run.spec, run.run_dir, plan.train, plan.test, device, emit)
            trained += 1
        plan.results[e.name].test_accuracy.append(float(metrics["test_accuracy"]))
        emit.run_end(name=e.name, seed=run.seed, test_accuracy=metrics["test_accuracy"], skipped=run.finished is not None)
    return trained


def publish_evaluation(plan: EvaluationPlan, trained: int, store: bool = True) -> Evaluation:
    """Write ``evaluation.json`` and ``evaluation.png``, and store the summary in the study.

    Args:
        plan: A plan whose runs ``run_evaluation`` finished.
        trained: How many runs were trained now.
        store: Keep the summary in the study (``StudyRecord.evaluations``).

    Returns:
        The evaluation.
    """
    result = Evaluation(
        study=plan.study.study_name, storage=plan.url, data=plan.data, epochs=plan.epochs, seeds=plan.seeds,
        recipe_trial=plan.recipe_trial, recipe=plan.recipe.model_dump(mode="json", exclude={"epochs", "seed"}),
        models=list(plan.results.values()), out=plan.out, trained=trained, skipped=len(plan.runs) - trained,
        evaluated_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    result.json_path = plan.out / "evaluation.json"
    write_json_atomic(result.json_path, result.to_json())
    title = f"{result.study}: {plan.epochs} epochs on {plan.facts.train_images:,} images, {len(plan.seeds)} seed(s)"
    result.plot_path = plot_evaluation([m.summary() for m in result.models], plan.out / "evaluation.png", title=title)
    if store:
        result.note = _store_evaluation(plan.study, result.summary())
    return result


def _store_evaluation(study: optuna.Study, summary: dict[str, Any]) -> Optional[str]:
    """Keep ``summary`` beside the study's other evaluations (it replaces one written to the same folder).

    Returns:
        A note when a more thorough evaluation stays the one ``best --by evaluation`` and
        ``report`` use, else None.
    """
    kept = [e for e in StudyRecord.of(study).all_evaluations() if e.get("out") != summary["out"]]
    kept.append(summary)
    study.set_user_attr("evaluations", kept)
    chosen = StudyRecord(evaluations=kept).chosen_evaluation()
    if chosen is None or chosen is summary:
        return None
    return (f"this evaluation ({plural(len(summary['seeds']), 'seed')}, {plural(summary['epochs'], 'epoch')}) is less "
            f"thorough than the one in {chosen['out']} ({plural(len(chosen['seeds']), 'seed')}, "
            f"{plural(chosen['epochs'], 'epoch')}), which `rknas best --by evaluation` and `rknas report` keep using; "
            f"name this one with --evaluation {len(kept)}")


def _train_run(e: _Entry, cfg: TrainConfig, spec: dict, run_dir: Path, train: TensorData, test: TensorData,
               device: str, emit: EvaluationEvents) -> dict[str, Any]:
    """Train one model with one seed; checkpoint each epoch; write metrics.json at the end."""
    import torch

    from rknas.train import evaluate as evaluate_model
    from rknas.train import fit, resolve_channels_last

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.pt"
    if _read_json(run_dir / "spec.json") != spec:
        ckpt.unlink(missing_ok=True)  # a checkpoint without its spec cannot be trusted
        write_json_atomic(run_dir / "spec.json", spec)
    t0 = time.perf_counter()

    def on_epoch(epoch: int, m: dict) -> None:
        emit.epoch(name=e.name, seed=cfg.seed, epoch=epoch, epochs=cfg.epochs, metrics=m)

    model, history, (mean, std) = fit(e.network, cfg, train, None, device=device, on_epoch=on_epoch,
                                      checkpoint=ckpt, resume=True)
    test_metrics = evaluate_model(model, test.to(device), mean, std, precision=cfg.precision,
                                  channels_last=resolve_channels_last(cfg.channels_last, device))
    metrics = {"name": e.name, "seed": cfg.seed, "epochs": cfg.epochs, "test_accuracy": test_metrics["accuracy"],
               "test_loss": test_metrics["loss"], "train_images": len(train), "test_images": len(test),
               "wall_time_s": time.perf_counter() - t0, "device": device, "threads": torch.get_num_threads(),
               "history": history, "spec": spec}
    write_json_atomic(run_dir / "metrics.json", metrics)
    ckpt.unlink(missing_ok=True)
    return metrics


def best_evaluated(study: optuna.Study, max_params: Optional[float] = None, max_flops: Optional[float] = None,
                   number: Optional[int] = None) -> dict[str, Any]:
    """The evaluated finalist (a trial) with the best mean test accuracy.

    Args:
        study: A study that ``evaluate`` stored a summary in.
        max_params: Only finalists with at most this many parameters.
        max_flops: ... and at most this many FLOPs.
        number: Which evaluation (``StudyRecord.chosen_evaluation``; default: the most thorough).

    Returns:
        Its summary entry (``trial``, ``mean``, ``std``, ...). Named models are not trials of
        the study, so they are never chosen, even with a higher mean.

    Raises:
        RknasError: The study has no evaluation, or no evaluated trial within the limits.
    """
    ev = chosen_evaluation(study, number)
    limit = SizeLimit(max_params=max_params, max_flops=max_flops)
    pool = [m for m in ev.get("models", []) if m.get("trial") is not None and limit.admits(m["params"], m["flops"])]
    if not pool:
        raise RknasError(f"no evaluated trial of study {study.study_name!r} fits the limits")
    return max(pool, key=lambda m: (m["mean"], -m["std"], -m["trial"]))


def chosen_evaluation(study: optuna.Study, number: Optional[int] = None) -> dict[str, Any]:
    """The study's most thorough evaluation, or the one numbered ``number`` (1 = the oldest).

    Raises:
        RknasError: The study has no evaluation, or none with that number.
    """
    record, name = StudyRecord.of(study), study.study_name
    try:
        ev = record.chosen_evaluation(number)
    except IndexError:
        raise RknasError(f"study {name!r} has no evaluation {number}: it has {len(record.all_evaluations())} "
                         "(`rknas report` lists them)") from None
    if ev is None:
        raise RknasError(f"study {name!r} has no evaluation yet; run `rknas evaluate --study {name} ...` first")
    return ev


__all__ = ["EvaluateOptions", "Evaluation", "EvaluationPlan", "ModelResult", "best_evaluated", "evaluate", "plan_evaluation",
           "publish_evaluation", "resolve_include", "run_evaluation", "select_finalists"]
