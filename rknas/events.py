"""Progress of a search and of an evaluation, as typed listeners.

``run_search`` and ``evaluate`` tell a *listener* what they do: an object with one method per
event, keyword arguments only (``SearchEvents``, ``EvaluationEvents``). ``SearchListener`` and
``EvaluationListener`` do nothing on every event: subclass one and override the events you
show (``rknas.display.SearchProgress`` does). A listener's ``__call__(kind, data)`` calls the
method named ``kind`` with ``data`` as its arguments.

The older form, a callable ``(kind, data)``, works wherever a listener does:
``CallbackEvents`` turns each method call into ``fn(kind, data)``, the method's name and its
keyword arguments (``search_listener`` and ``evaluation_listener`` wrap a callable in it).

Listeners live in the process that started the search. Ray pickles the searcher and the Tune
callbacks; the holders of a listener leave it out of their pickles (``StudySearch.__getstate__``
drops what ``rknas.search.tune_adapter.LIVE`` lists, ``TrialEvents.__getstate__``), and
``CallbackEvents`` pickles to one that does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, Protocol, Union, cast, runtime_checkable

if TYPE_CHECKING:
    from rknas.storage.record import TrialRecord

EventSink = Callable[[str, dict], None]
"""The callable form of a listener: ``fn(kind, data)`` with an event's name and its arguments."""


@runtime_checkable
class SearchEvents(Protocol):
    """What a search tells its listener (``SearchOptions.on_event``), in the order it happens.

    Each method's default does nothing: ``SearchListener`` is the protocol as a base class.
    """

    def already_done(self, *, finished: int, target: int) -> None:
        """The study holds the target already: nothing runs.

        Args:
            finished: Finished trials in the study.
            target: The requested number (``--trials``).
        """
        return None

    def start(self, *, study: str, storage: str, finished: int, target: int, remaining: int, concurrency: int,
              stale: int, space: str, warm_start: int = 0, driver: str = "", revision: int = 0,
              changes: Optional[dict[str, list]] = None, deadline: Optional[float] = None, table: str = "",
              val_images: int = 0) -> None:
        """Every check passed, the study exists: trials start now.

        Args:
            study: The study's name.
            storage: Its storage URL, without password.
            finished: Finished trials in the study.
            target: The requested number of finished trials.
            remaining: ``target - finished``.
            concurrency: Trials at once.
            stale: Trials of dead drivers recovered at the start.
            space: The space's name.
            warm_start: Trials enqueued from ``start_from`` (a new study's first ones).
            driver: This driver's id.
            revision: The space revision this driver's trials record.
            changes: What changed since the study started (``--allow-changes``): key -> [before, after].
            deadline: ``--timeout``'s deadline on the driver's clock, if any.
            table: The benchmark table answering the trials (``--table``, with its time
                scale), or "" when they train.
            val_images: Images in the validation split the trials are scored on (0 with a
                table): accuracies move in steps of one image, so trials can tie.
        """
        return None

    def progress(self, *, finished: int, running: int, target: int) -> None:
        """The study's counts, all drivers together, before each Tune round or wait.

        Args:
            finished: Finished trials.
            running: RUNNING trials (of all drivers).
            target: The requested number.
        """
        return None

    def waiting(self, *, running: int, finished: int, target: int) -> None:
        """Other drivers' running trials fill the target: this driver waits for them.

        Args:
            running: RUNNING trials.
            finished: Finished trials.
            target: The requested number.
        """
        return None

    def trial_start(self, *, trial_id: str) -> None:
        """Tune started a trial.

        Args:
            trial_id: Tune's trial id.
        """
        return None

    def trial_result(self, *, trial_id: str, result: dict[str, Any]) -> None:
        """A trial reported an epoch.

        Args:
            trial_id: Tune's trial id.
            result: Tune's result: the trial's ``EpochResult`` (``epoch``, ``val_accuracy``, ...) and Tune's keys.
        """
        return None

    def trial_retry(self, *, trial_id: str, number: int, reason: str, attempt: int) -> None:
        """A trial's worker died; Tune runs the trial again from its last finished epoch.

        Args:
            trial_id: Tune's trial id.
            number: The Optuna trial number.
            reason: Why the worker died.
            attempt: The attempt that starts now (2 for the first retry).
        """
        return None

    def trial_end(self, *, trial_id: str, number: int, state: str, record: TrialRecord, values: Any,
                  note: Optional[str] = None) -> None:
        """A trial was recorded.

        Args:
            trial_id: Tune's trial id.
            number: The Optuna trial number.
            state: COMPLETE, PRUNED or FAIL, as recorded.
            record: The trial's record.
            values: The objective values (a float, a list, or None).
            note: Why the recorded state is not this driver's result (another driver finished the trial), if so.
        """
        return None

    def trial_repeat(self, *, number: int, repeat_of: int, repeat: int) -> None:
        """Racing asked for a re-measurement: the configuration of trial ``number`` runs again.

        Args:
            number: The configuration's latest complete run.
            repeat_of: The configuration's first trial.
            repeat: Which re-measurement (1: the configuration's second run).
        """
        return None

    def incumbent(self, *, number: int, value: float, runs: int) -> None:
        """With racing, the configuration the search would return now (``rknas.storage.racing.RULE``).

        Args:
            number: The configuration's first trial.
            value: Its mean objective value over its complete runs.
            runs: How many runs stand behind it.
        """
        return None

    def recovered(self, *, numbers: list[int]) -> None:
        """Trials of a driver that stopped recording heartbeats were recovered (FAIL, interrupted).

        Args:
            numbers: Their trial numbers.
        """
        return None

    def interrupted_trials(self, *, numbers: list[int]) -> None:
        """This driver's trials that a signal stopped before they finished (FAIL, interrupted).

        Args:
            numbers: Their trial numbers.
        """
        return None


@runtime_checkable
class EvaluationEvents(Protocol):
    """What ``rknas.evaluate.evaluate`` tells its listener; each default does nothing."""

    def start(self, *, study: str, runs: int, done: int, models: int, seeds: list[int], epochs: int, out: str,
              recipe_trial: int, device: str) -> None:
        """Every check passed; training starts.

        Args:
            study: The study's name.
            runs: Runs in all (models x seeds).
            done: Runs finished earlier (skipped).
            models: Models evaluated.
            seeds: The seeds of every model.
            epochs: Epochs of every run.
            out: The output folder.
            recipe_trial: The trial whose training settings every run uses.
            device: Where the runs train ("" when every run had finished: nothing trains).
        """
        return None

    def run_start(self, *, name: str, seed: int, epochs: int) -> None:
        """A run starts training (or resumes).

        Args:
            name: The model's name.
            seed: The run's seed.
            epochs: Its epochs.
        """
        return None

    def epoch(self, *, name: str, seed: int, epoch: int, epochs: int, metrics: dict[str, Any]) -> None:
        """A run finished an epoch.

        Args:
            name: The model's name.
            seed: The run's seed.
            epoch: The epoch just finished (from 1).
            epochs: The run's epochs.
            metrics: ``train_loss``, ``train_accuracy``, ...
        """
        return None

    def run_end(self, *, name: str, seed: int, test_accuracy: float, skipped: bool) -> None:
        """A run ended (or was found finished).

        Args:
            name: The model's name.
            seed: The run's seed.
            test_accuracy: Its test accuracy.
            skipped: It finished earlier and was read back, not trained.
        """
        return None


@runtime_checkable
class BenchEvents(Protocol):
    """What ``rknas.bench.build.build_table`` and ``rknas.bench.replay.run_replay`` tell their listener; each
    default does nothing."""

    def start(self, *, table: str, archs: int, seeds: int, epochs: int, runs: int, done: int, concurrency: int) -> None:
        """The architectures are drawn and recorded; training starts.

        Args:
            table: The table file.
            archs: Architectures in the table.
            seeds: Seeds per architecture.
            epochs: Epochs per run.
            runs: Runs in all (archs x seeds).
            done: Runs recorded earlier (not trained again).
            concurrency: Runs at once.
        """
        return None

    def run_end(self, *, arch: int, seed: int, params: int, status: str, test_accuracy: float, train_s: float) -> None:
        """A run finished and was appended to the table.

        Args:
            arch: The architecture's id in the table.
            seed: The run's seed.
            params: The architecture's parameters.
            status: ``ok``, ``diverged`` or ``failed``.
            test_accuracy: Its final test accuracy (0 unless ok).
            train_s: Its training time.
        """
        return None

    def replay_repeat(self, *, strategy: str, done: int, total: int) -> None:
        """A replay finished one more repeat of a strategy.

        Args:
            strategy: The strategy's name (``tpe+asha``).
            done: Its repeats finished so far.
            total: Its repeats in all.
        """
        return None


def _dispatch(listener: Any, names: frozenset[str], kind: str, data: dict) -> None:
    if kind in names:
        getattr(listener, kind)(**data)


def _methods(protocol: type) -> frozenset[str]:
    return frozenset(n for n, v in vars(protocol).items() if not n.startswith("_") and callable(v))


SEARCH_EVENTS = _methods(SearchEvents)
EVALUATION_EVENTS = _methods(EvaluationEvents)
BENCH_EVENTS = _methods(BenchEvents)


class _Dispatching:
    """The callable form of a listener: ``listener(kind, data)`` calls the method named ``kind``."""

    _events: frozenset[str] = frozenset()

    def __call__(self, kind: str, data: dict) -> None:
        """Call the method named ``kind`` with ``data`` (unknown kinds are ignored).

        Args:
            kind: The event's name.
            data: Its keyword arguments.
        """
        _dispatch(self, self._events, kind, data)


class SearchListener(_Dispatching, SearchEvents):
    """A search listener that does nothing: override the events you show."""

    _events = SEARCH_EVENTS


class EvaluationListener(_Dispatching, EvaluationEvents):
    """An evaluation listener that does nothing: override the events you show."""

    _events = EVALUATION_EVENTS


class BenchListener(_Dispatching, BenchEvents):
    """A bench-build listener that does nothing: override the events you show."""

    _events = BENCH_EVENTS


ALL_EVENTS = SEARCH_EVENTS | EVALUATION_EVENTS | BENCH_EVENTS


class CallbackEvents:
    """A listener of every kind (search, evaluation, bench build) that calls ``fn(kind, data)``.

    Its events are the Protocols' methods, looked up by name: there is no second list of event
    names to keep in step. It pickles to one that does nothing: the callable stays in this process.
    """

    def __init__(self, fn: Optional[EventSink]):
        self.fn = fn

    def __getstate__(self) -> dict:
        return {"fn": None}

    def __getattr__(self, kind: str) -> Callable[..., None]:
        if kind not in ALL_EVENTS:  # also the look-ups of pickling and copying
            raise AttributeError(kind)

        def emit(**data: Any) -> None:
            fn = self.__dict__.get("fn")
            if fn is not None:
                fn(kind, data)

        return emit


class _Partial:
    """A listener written before some of its protocol's events existed: told the events it has methods for."""

    def __init__(self, sink: Any, events: frozenset[str]):
        self.sink, self.events = sink, events

    def __getattr__(self, kind: str) -> Callable[..., None]:
        if kind not in self.__dict__.get("events", ()):
            raise AttributeError(kind)
        return getattr(self.sink, kind, lambda **data: None)


def _listener(sink: Any, protocol: type, nothing: type) -> Any:
    """``sink`` if it is a ``protocol`` listener; one with methods for only some of the protocol's events
    (written before the others existed) is told those; a ``CallbackEvents`` around a plain callable;
    ``nothing()`` for None."""
    if sink is None:
        return nothing()
    if isinstance(sink, protocol):
        return sink
    events = _methods(protocol)
    if any(callable(getattr(sink, name, None)) for name in events):
        return _Partial(sink, events)
    return CallbackEvents(sink)


def search_listener(sink: Union[SearchEvents, EventSink, None]) -> SearchEvents:
    """The listener for what ``SearchOptions.on_event`` holds.

    Args:
        sink: A listener (used as it is), a callable ``(kind, data)`` (wrapped in ``CallbackEvents``), or None.

    Returns:
        A listener; ``SearchListener()`` (nothing) for None.
    """
    return cast(SearchEvents, _listener(sink, SearchEvents, SearchListener))


def evaluation_listener(sink: Union[EvaluationEvents, EventSink, None]) -> EvaluationEvents:
    """The listener for what ``EvaluateOptions.on_event`` holds.

    Args:
        sink: A listener (used as it is), a callable ``(kind, data)`` (wrapped in ``CallbackEvents``), or None.

    Returns:
        A listener; ``EvaluationListener()`` (nothing) for None.
    """
    return cast(EvaluationEvents, _listener(sink, EvaluationEvents, EvaluationListener))


def bench_listener(sink: Union[BenchEvents, EventSink, None]) -> BenchEvents:
    """The listener for what ``BenchBuildOptions.on_event`` and ``BenchReplayOptions.on_event`` hold.

    Args:
        sink: A listener (used as it is), a callable ``(kind, data)`` (wrapped in ``CallbackEvents``), or None.

    Returns:
        A listener; ``BenchListener()`` (nothing) for None.
    """
    return cast(BenchEvents, _listener(sink, BenchEvents, BenchListener))
