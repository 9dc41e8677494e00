"""Command options are pydantic models: each field is a flag (help, default, constraint); progress is typed events."""

import inspect
import pickle
import re

import pytest
from pydantic import Field

import rknas.cli
import rknas.evaluate
from rknas.cli_flags import parse_csv
from rknas.config import NetworkConfig
from rknas.errors import ConfigError, RknasError
from rknas.events import (
    BENCH_EVENTS,
    EVALUATION_EVENTS,
    SEARCH_EVENTS,
    BenchEvents,
    BenchListener,
    CallbackEvents,
    EvaluationEvents,
    EvaluationListener,
    SearchEvents,
    SearchListener,
    bench_listener,
    evaluation_listener,
    search_listener,
)
from rknas.options import EvaluateOptions, SearchOptions, TrainOptions, flag_name, merge_flags
from rknas.search import SearchOptions as ExportedSearchOptions
from rknas.search.runner import SearchOptions as RunnerSearchOptions
from rknas.train import train_from_config


def flat(text: str) -> str:
    """Help text without rich's box drawing and line breaks."""
    return " ".join(text.replace("│", " ").split())


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps --help at the terminal's width


# ---- a new flag is one field -----------------------------------------------------------------
class BeamSearchOptions(SearchOptions):
    """``SearchOptions`` with a throwaway flag: what adding a search flag amounts to."""

    beam_width: int = Field(4, ge=1, description="Beams kept per round (a throwaway flag of this test).")


@pytest.fixture
def beam_command():
    """A command `rknas beam` taking BeamSearchOptions, registered for one test; yields the options it received."""
    seen = []

    def beam(opts: BeamSearchOptions):
        """A throwaway command of the tests."""
        seen.append(opts)

    rknas.cli.command("beam")(beam)
    try:
        yield seen
    finally:
        rknas.cli.app.registered_commands[:] = [c for c in rknas.cli.app.registered_commands if c.name != "beam"]


def test_a_field_added_to_a_model_reaches_help_validation_and_the_command(cli, wide, beam_command):
    code, out, _ = cli("beam", "--help")
    text = flat(out)
    assert code == 0
    assert "--beam-width N Beams kept per round (a throwaway flag of this test). [default: 4]" in text
    assert "--trials" in text and "--on-event" not in text  # the inherited flags too; callbacks are not flags

    code, _, err = cli("beam", "--space", "s", "--beam-width", "0")
    assert code == 2 and err.strip() == "error: --beam-width must be at least 1, got 0"
    assert beam_command == []

    code, _, err = cli("beam", "--space", "s", "--beam-width", "7", "--trials", "3", "--no-early-stopping",
                       "--start-from", "m1", "--start-from", "m2")
    assert code == 0, err
    (opts,) = beam_command
    assert isinstance(opts, BeamSearchOptions)
    assert (opts.beam_width, opts.trials, opts.early_stopping, opts.start_from) == (7, 3, False, ["m1", "m2"])
    beam_command.clear()
    assert cli("beam", "--space", "s")[0] == 0
    assert beam_command[0].model_dump() == BeamSearchOptions(space="s").model_dump()  # the command line's defaults are the model's


# ---- every field is a flag with its help ---------------------------------------------------------
@pytest.mark.parametrize("command,model", [("search", SearchOptions), ("evaluate", EvaluateOptions),
                                           ("train", TrainOptions)])
def test_every_field_of_a_command_model_is_a_flag_with_its_help(cli, wide, command, model):
    code, out, _ = cli(command, "--help")
    text = flat(out)
    assert code == 0
    for name, info in model.model_fields.items():
        flag = flag_name(model, name)
        if not merge_flags(info.metadata).cli:
            assert name in ("on_event", "store", "trial_filesystem") and f"--{name.replace('_', '-')} " not in text
            continue
        assert f"{flag} " in text, flag
        assert info.description and info.description in text, name


def test_describe_flags_are_network_config_fields(cli, wide):
    code, out, _ = cli("describe", "--help")
    text = flat(out)
    assert code == 0
    for name in NetworkConfig.model_fields:
        if name == "memory_efficient":  # changes neither params nor FLOPs
            assert "--memory-efficient" not in text
            continue
        flag = {"attention": "--no-attention", "multiscale": "--no-multiscale"}.get(name, "--" + name.replace("_", "-"))
        assert f"{flag} " in text, flag
    assert "--model " in text and "--json " in text


@pytest.mark.parametrize("args,message", [
    (["search", "--space", "s", "--cpus-per-trial", "0"], "--cpus-per-trial must be positive, got 0"),
    (["search", "--space", "s", "--max-retries", "-1"], "--max-retries must be 0 or more, got -1"),
    (["search", "--space", "s", "--storage-retry", "-1"], "--storage-retry must be 0 or more (seconds), got -1"),
    (["search", "--space", "s", "--table", "t.db", "--time-scale", "0"], "--time-scale must be positive, got 0"),
    (["search", "--space", "s", "--time-scale", "0.1"],
     "--time-scale scales a table's recorded epoch times: give --table too, or leave it out"),
    (["search", "--space", "s", "--heartbeat-interval", "70"],
     "--stale-after (60) must be longer than --heartbeat-interval (70), or live trials would be taken for dead"),
    (["evaluate", "--study", "s", "--epochs", "1", "--top", "2", "--pareto"], "--top and --pareto exclude each other"),
    (["train", "--config", "nope.yaml", "--epochs", "0"], "--epochs must be at least 1, got 0"),
])
def test_bad_values_are_one_line_naming_the_flag(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2 and out == "" and err.strip() == f"error: {message}"


def test_evaluate_gets_its_options_model(cli, monkeypatch):
    seen = []

    def stand_in(opts):
        seen.append(opts)
        raise KeyboardInterrupt  # stops the command once the options arrived

    monkeypatch.setattr(rknas.evaluate, "evaluate", stand_in)
    code, _, _ = cli("evaluate", "--study", "s", "--epochs", "2", "--include", "a, b", "--include", "c", "--seeds", "1")
    assert code == 130
    (opts,) = seen
    assert (opts.study, opts.epochs, opts.seeds, opts.include, opts.store) == ("s", 2, 1, ["a", "b", "c"], True)
    assert isinstance(opts.on_event, EvaluationEvents)


# ---- the models as library API -------------------------------------------------------------------
def test_search_options_is_one_class_everywhere_and_keeps_its_defaults():
    assert SearchOptions is RunnerSearchOptions is ExportedSearchOptions
    opts = SearchOptions(space="digits_quick", trials=4, concurrency=1)
    assert (opts.trials, opts.seed, opts.heartbeat_interval, opts.stale_after, opts.max_retries) == (4, 0, 10, 60, 2)
    assert opts.start_from == [] and opts.on_event is None and "on_event" not in repr(opts)


@pytest.mark.parametrize("kw,message", [
    ({"trials": 0}, "--trials must be at least 1, got 0"),
    ({"max_params": 0.0}, "--max-params must be positive, got 0"),
    ({"gpus_per_trial": -1}, "--gpus-per-trial must be 0 or more, got -1"),
    ({"stale_after": 10}, "--stale-after (10) must be longer than --heartbeat-interval (10)"),
    ({"trials": "many"}, "--trials: Input should be a valid integer"),
    ({"on_event": 3}, "on_event: Input should be"),
    ({"bogus": 1}, "bogus: Extra inputs are not permitted"),
])
def test_search_options_refuse_bad_values_with_the_flags_message(kw, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SearchOptions(space="s", **kw)


def test_assignment_is_validated_too():
    opts = SearchOptions(space="s")
    with pytest.raises(ConfigError, match=re.escape("--timeout must be positive (seconds), got -1")):
        opts.timeout = -1.0
    opts.timeout = 5
    assert opts.timeout == 5.0


def test_train_from_config_takes_options_or_a_path_with_fields(tmp_path):
    with pytest.raises(ConfigError, match="--epochs must be at least 1, got 0"):
        train_from_config(tmp_path / "c.yaml", epochs=0)  # refused before the file is read
    with pytest.raises(ConfigError, match="does not exist"):
        train_from_config(TrainOptions(config=tmp_path / "c.yaml"))


def test_comma_lists():
    assert parse_csv("5, 5,6", int) == [5, 5, 6]
    with pytest.raises(RknasError, match="comma-separated list of int"):
        parse_csv("a,b", int)


# ---- progress events -------------------------------------------------------------------------------
def _arguments(protocol, name):
    """Keyword arguments for an event: each parameter's name as its value."""
    params = inspect.signature(getattr(protocol, name)).parameters
    return {p: p for p in params if p != "self"}


def test_callback_events_turn_each_event_into_kind_and_data():
    got = []
    sink = CallbackEvents(lambda kind, data: got.append((kind, data)))
    for protocol, names in ((SearchEvents, SEARCH_EVENTS), (EvaluationEvents, EVALUATION_EVENTS), (BenchEvents, BENCH_EVENTS)):
        for name in sorted(names):
            getattr(sink, name)(**_arguments(protocol, name))
            assert got.pop() == (name, _arguments(protocol, name))
    assert isinstance(sink, SearchEvents) and isinstance(sink, EvaluationEvents) and isinstance(sink, BenchEvents)
    with pytest.raises(AttributeError):
        sink.trial_ended(number=1)  # a misspelt event is an error, not a silent no-op
    copy = pickle.loads(pickle.dumps(sink))
    assert copy.fn is None  # the callable (a lambda here) stays in this process
    copy.trial_end(number=1)  # and the copy does nothing


def test_bench_build_takes_a_plain_callable_as_its_options_say():
    got = []
    events = bench_listener(lambda kind, data: got.append((kind, data)))
    events.run_end(arch=1, seed=0, params=10, status="ok", test_accuracy=0.5, train_s=1.0)
    assert got == [("run_end", {"arch": 1, "seed": 0, "params": 10, "status": "ok", "test_accuracy": 0.5, "train_s": 1.0})]
    assert type(bench_listener(None)) is BenchListener


def test_a_listener_written_before_an_event_existed_is_told_the_events_it_has():
    class OldBuildView:  # bench build's two events only, from before bench replay's was added; no base class
        def __init__(self):
            self.ends = []

        def run_end(self, **data):
            self.ends.append(data["arch"])

    view = OldBuildView()
    events = bench_listener(view)
    events.start(table="t.db", archs=1, seeds=1, epochs=1, runs=1, done=0, concurrency=1)  # it has none: nothing
    events.run_end(arch=3, seed=0, params=10, status="ok", test_accuracy=0.5, train_s=1.0)
    events.replay_repeat(strategy="random", done=1, total=2)
    assert view.ends == [3]


def test_the_kinds_are_todays():
    assert SEARCH_EVENTS == {"already_done", "start", "progress", "waiting", "trial_start", "trial_result", "trial_retry",
                             "trial_end", "trial_repeat", "incumbent", "recovered", "interrupted_trials"}
    assert EVALUATION_EVENTS == {"start", "run_start", "epoch", "run_end"}
    assert BENCH_EVENTS == {"start", "run_end", "replay_repeat"}  # bench build's and bench replay's


def test_the_no_op_listeners_take_every_event_and_the_callable_form():
    for listener, protocol, names in ((SearchListener(), SearchEvents, SEARCH_EVENTS),
                                      (EvaluationListener(), EvaluationEvents, EVALUATION_EVENTS),
                                      (BenchListener(), BenchEvents, BENCH_EVENTS)):
        for name in names:
            assert getattr(listener, name)(**_arguments(protocol, name)) is None
            listener(name, _arguments(protocol, name))
        listener("no_such_event", {"x": 1})  # ignored, as before

    class Recovered(SearchListener):
        def __init__(self):
            self.numbers = []

        def recovered(self, *, numbers):
            self.numbers += numbers

    view = Recovered()
    CallbackEvents(view).recovered(numbers=[3])  # a listener is a (kind, data) callable as well
    view("recovered", {"numbers": [4]})
    assert view.numbers == [3, 4]


def test_sinks_become_listeners():
    view = SearchListener()
    assert search_listener(view) is view
    assert type(search_listener(None)) is SearchListener and type(evaluation_listener(None)) is EvaluationListener
    fn = lambda kind, data: None  # noqa: E731
    assert isinstance(search_listener(fn), CallbackEvents) and search_listener(fn).fn is fn
    assert isinstance(evaluation_listener(fn), CallbackEvents)
    from rknas.display import EvaluationProgress, SearchProgress

    assert issubclass(SearchProgress, SearchListener) and issubclass(EvaluationProgress, EvaluationListener)
