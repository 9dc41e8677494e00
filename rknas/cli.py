"""The ``rknas`` command line: a thin typer layer over the library.

Each command parses its options, calls one library function and prints the result (tables
come from ``rknas.display``). User errors are ``RknasError``s, printed by ``main`` as one
line with exit code 2.

Flags are declared once: ``search``, ``evaluate`` and ``train`` take their options model
(``rknas.options``), whose fields become the flags (``rknas.cli_flags``); ``describe`` takes
``NetworkConfig``'s fields; options several commands share are the typed aliases of
``rknas.options`` (``Study``, ``Storage``, ``Json``, ``Device``, ``DataRoot``). A new command is a
function registered with ``@command()``; a new flag of search/evaluate/train is a field of its model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.filesize import decimal
from typer.exceptions import TyperException

from rknas import display
from rknas import storage as db  # a lazy package: Optuna and SQLAlchemy load when a command opens a study
from rknas.cli_flags import STARTED, Overrides, command_flags
from rknas.config import NetworkConfig, load_network_section
from rknas.errors import RknasError
from rknas.options import (
    BenchBuildOptions,
    BenchProxiesOptions,
    BenchReplayOptions,
    DataRoot,
    Device,
    EvaluateOptions,
    Flag,
    Json,
    SearchOptions,
    Storage,
    Study,
    TrainOptions,
)
from rknas.plugins import load_errors, plugin_info
from rknas.strategies.lookup import list_strategies
from rknas.util import busy_hint, plural, training_threads, usable_device

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}  # -h everywhere, as most CLIs accept
app = typer.Typer(
    help="Neural architecture search over Runge-Kutta CNNs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)


def _version(value: bool) -> None:
    if value:
        from rknas._version import __version__

        print(f"rknas {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar="",
                                 help="Print rknas's version and exit."),
) -> None:
    """Neural architecture search over Runge-Kutta CNNs."""


console = display.make_console()
err_console = display.make_console(stderr=True)


def command(name: Optional[str] = None, on: typer.Typer = app) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a command whose flags come from its options model and the shared aliases (``rknas.cli_flags``)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        return on.command(name)(command_flags(fn))

    return register


@command()
def strategies(as_json: Json = False):
    """List every registered stage strategy and the package that provides it."""
    rows = [
        {"name": s.name, "description": s.description, "min_stages": s.min_stages, "package": s.package, "version": s.version}
        for s in list_strategies()
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        r["provider"] = f"{r['package']} {r['version']}".strip()
    console.print(
        display.rows_table(rows, {"name": "name", "min_stages": "min s", "provider": "package", "description": "description"})
    )


@command()
def plugins(as_json: Json = False):
    """List loaded plugins (built-in and installed) with the hooks each implements."""
    rows = plugin_info()
    if as_json:
        print(json.dumps({"plugins": rows, "load_errors": load_errors}, indent=2))
        return
    console.print(display.rows_table(rows, {"name": "plugin", "package": "package", "version": "version", "hooks": "hooks"}))
    for err in load_errors:
        console.print(f"[red]not loaded:[/red] {err}")


@command()
def models(
    pattern: str = typer.Argument("*", help="Glob over model names."),
    as_json: Json = False,
):
    """List the named paper models with params and FLOPs (use them as `--model NAME`, `--include NAME`)."""
    from rknas.models.registry import model_sizes  # rknas's own models from the shipped table; a plugin's are counted

    rows = model_sizes(pattern)
    if not rows:
        raise RknasError(f"no named model matches {pattern!r}; `rknas models` lists them all")
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        r["input"] = f"{r['in_channels']}x{r['image_size']}x{r['image_size']}"
        r["size"] = f"{r['params']:,}"
        r["gflops"] = f"{r['flops'] / 1e9:.4f}"
    console.print(
        display.rows_table(
            rows,
            {
                "model": "model",
                "name": "paper name",
                "input": "input",
                "classes": "classes",
                "size": "params",
                "gflops": "GFLOPs",
            },
        )
    )


# `describe` takes NetworkConfig's fields as flags; their help is here (NetworkConfig documents the network).
DESCRIBE_FLAGS = {
    "framework": Flag(help="cifar or mnist."),
    "strategy": Flag(csv=str, help="One strategy, or one per period: I,I,R."),
    "stages": Flag(csv=int, help="Stages per period: 5,5,6."),
    "k": Flag(csv=int, help="Channels per period: 150,120,120."),
    "steps": Flag(csv=int, help="Time steps per period (default 1)."),
    "classes": Flag(help="Output classes (default 10)."),
    "in_channels": Flag(help="Input channels (default: the framework's)."),
    "image_size": Flag(help="Input height and width (default: the framework's)."),
    "attention": Flag("--no-attention", switch=False, help="Plain transitions."),
    "multiscale": Flag("--no-multiscale", switch=False, help="Only the last period feeds the classifier."),
    "width": Flag(help="Bottleneck width factor w."),
    "dropout": Flag(help="Dropout rate."),
}
NetworkFlags = Annotated[
    dict[str, Any],
    # memory_efficient changes neither params nor FLOPs
    Overrides(NetworkConfig, exclude=frozenset({"memory_efficient"}), flags=DESCRIBE_FLAGS),
]


@command()
def describe(
    config: Optional[Path] = typer.Argument(
        None, help="A config file written by `rknas best` (or any YAML with a `network:` section)."
    ),
    model: Optional[str] = typer.Option(None, "--model", help="A named model from `rknas models`."),
    *,
    network: NetworkFlags,
    as_json: Json = False,
):
    """Build a network and print its size (params, FLOPs in the paper's convention)."""
    from rknas.models.counting import describe as describe_network  # torch: counting builds the network
    from rknas.models.network import parse_network_config
    from rknas.models.registry import model_config

    data: dict = {}
    if config is not None:
        data.update(load_network_section(config))
    if model is not None:
        data.update(model_config(model).model_dump(exclude_defaults=False))
    data.update(network)
    where = f"{config}: a network (framework, strategy, stages, k, ...) or a config from `rknas best`" if config else ""
    info = describe_network(parse_network_config(data, where))
    if as_json:
        print(json.dumps(info))
        return
    console.print(display.network_table(info))


@command()
def search(opts: SearchOptions):
    """Search architectures: Ray Tune runs Optuna trials, the study is stored in SQL.

    Several `rknas search` processes (same --study and --storage, any machines) can share a study.

    Together they stop at --trials finished trials; a killed one's trials are recovered.
    """
    from rknas.search.runner import run_search  # torch and Ray: imported when a search runs

    view = display.SearchProgress(console)
    opts.on_event = view
    try:
        result = run_search(opts)
    finally:
        view.stop()
    counts = ", ".join(f"{v} {k.lower()}" for k, v in result.counts.items())
    shown = f"{result.finished}/{result.target}"
    if result.finished > result.target:  # --trials is the study's total: an older, larger study is not "20/4"
        shown = f"{result.finished} (more than --trials {result.target})"
    console.print(f"Study [bold]{result.study}[/]: {shown} finished ({counts}).")
    if result.best:
        b = result.best
        size = ", ".join(f"{b[k]:,} {name}" for k, name in (("params", "params"), ("flops", "FLOPs")) if b.get(k) is not None)
        runs = f" (mean of {b['runs']} seeds)" if (b.get("runs") or 1) > 1 else ""
        console.print(f"Best: trial {b['number']}, val accuracy {b['val_accuracy']:.4f}{runs}" + (f", {size}." if size else "."))
        storage_arg = f" --storage {result.storage}" if opts.storage else ""
        console.print(f"Export it: rknas best --study {result.study}{storage_arg} -o best.yaml")
    if result.timed_out:
        console.print(
            f"Stopped starting trials after --timeout {opts.timeout or 0:g}s; the running ones finished and were recorded. "
            f"{result.finished} of {result.target} finished: run the same command again to continue the study."
        )
    if result.interrupted:
        print(
            f"interrupted: {result.finished} of {result.target} trials finished; run the same command to continue",
            file=sys.stderr,
        )
        return 130
    if result.failed_outside_training:
        print(f"error: every trial this run recorded failed outside training (worker, node or storage): "
              f"{result.failed_outside_training}", file=sys.stderr)
        return 1
    return 0


@command()
def best(
    study: Study,
    storage: Storage = None,
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the config here (default: print it)."),
    max_params: Optional[float] = typer.Option(
        None, "--max-params", help="Most accurate candidate with at most this many params."
    ),
    max_flops: Optional[float] = typer.Option(None, "--max-flops", help="... and at most this many FLOPs."),
    trial: Optional[int] = typer.Option(None, "--trial", help="Export this trial number instead."),
    as_json: Annotated[Json, Flag(help="Print the config as one JSON object (ignored with -o).")] = False,
    by: str = typer.Option(
        "trial",
        "--by",
        help="trial: the best search result; evaluation: the finalist with the best mean test accuracy "
        "in the study's most thorough `rknas evaluate` (within --max-params/--max-flops).",
    ),
    number: Optional[int] = typer.Option(None, "--evaluation", min=1,
                                         help="With --by evaluation: use this evaluation (1 = the oldest; `rknas report` "
                                              "lists them)."),
):
    """Export the winning config (multi-objective: list the Pareto set, export the most accurate within limits)."""
    _short_lived()
    if by not in ("trial", "evaluation"):
        raise RknasError(f"--by must be trial or evaluation, got {by!r}")
    if by == "evaluation" and trial is not None:
        raise RknasError("--trial and --by evaluation exclude each other")
    if number is not None and by != "evaluation":
        raise RknasError("--evaluation chooses among evaluations: add --by evaluation")
    url = db.storage_url(storage)
    st = db.open_study(study, url)
    if len(st.directions) > 1 and by == "trial":
        err_console.print(display.pareto_table(st))
    evaluated = None
    if by == "evaluation":
        from rknas.evaluate import best_evaluated  # torch: the evaluation module trains

        evaluated = best_evaluated(st, max_params=max_params, max_flops=max_flops, number=number)
    if evaluated is not None:
        trial = evaluated["trial"]
    pool = db.candidates(st, lean=True) if trial is None else None
    chosen = db.choose(st, max_params=max_params, max_flops=max_flops, trial=trial, pool=pool)
    tied = db.ties(st, pool, chosen) if pool is not None else 0
    cfg = db.export_config(st, chosen, url)
    if evaluated is not None:
        cfg["provenance"]["evaluation"] = {k: evaluated[k] for k in ("test_accuracy", "mean", "std")}
    text = "# rknas config, exported by `rknas best`; train it with `rknas train --config FILE`\n" + yaml.safe_dump(
        cfg, sort_keys=False
    )
    if output is None:
        print(json.dumps(cfg, indent=2) if as_json else text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        val = cfg["provenance"]["values"].get("val_accuracy", 0)
        behind = cfg["provenance"].get("runs")
        shown = f"{val:.4f}" if not behind else f"{behind['mean']:.4f} (mean of {behind['runs']} seeds)"
        err_console.print(
            f"Wrote {output}: trial {chosen.number}, {cfg['name']}, val accuracy {shown}, "
            f"{cfg['provenance']['params']:,} params"
            + ("" if evaluated is None else ", evaluated test accuracy "
               + display.mean_std(evaluated["mean"], evaluated["std"], evaluated.get("test_accuracy")))
        )
    if tied:
        from rknas.storage.racing import TIE_RULE

        err_console.print(f"{tied} other trial(s) score the same; the tie went to {TIE_RULE}")


@command()
def train(opts: TrainOptions):
    """Train a config on train+validation, checkpoint every epoch, report test accuracy."""
    from rknas.train import train_from_config  # torch

    view = display.TrainProgress(err_console)

    def started(epochs: int) -> None:  # every check passed: say what would slow it down, then draw the bar
        hint = busy_hint(training_threads(opts.threads))
        if hint:
            err_console.print(hint)
        view.start(epochs)

    try:
        metrics = train_from_config(opts, on_epoch=view.epoch, on_start=started)
    except KeyboardInterrupt:
        view.stop()
        print(
            "interrupted: the last finished epoch is in the checkpoint; add --resume to the same command to continue",
            file=sys.stderr,
        )
        return 130
    finally:
        view.stop()
    console.print(
        f"{metrics['name']}: test accuracy {metrics['test_accuracy']:.4f} after {plural(metrics['epochs'], 'epoch')} "
        f"({metrics['params']:,} params, {metrics['wall_time_s']:.1f} s). Wrote {metrics['out']}/model.pt and metrics.json"
    )
    ignored = ", ".join(f"{k}={v}" for k, v in metrics["data"]["ignored"].items())
    console.print(
        f"Data: all {metrics['train_images']:,} training images of {metrics['data']['name']} (train + validation); "
        f"the search's split settings do not apply ({ignored})."
    )


@command("evaluate")
def evaluate_cmd(opts: EvaluateOptions):
    """Train finalists (and named models) from scratch with several seeds; compare them on the test split.

    Data: every model trains on the data set's whole training split (the search's train + validation) for --epochs.

    Recipe, one for all: the best trial's training settings (optimizer, lr, weight decay, batch, schedule, augmentation).

    Why one recipe: named models have no searched settings; with the same settings, differences are the architectures'.

    A named model gets the data set's number of classes; its input size and channels must match the data.

    Writes OUT/evaluation.json, OUT/evaluation.png, OUT/runs/<model>/seed<k>/metrics.json; a rerun skips finished runs.

    The summary is kept in the study beside earlier ones: `rknas best --by evaluation` exports the best finalist of the
    most thorough, `rknas report` shows it.
    """
    from rknas.evaluate import evaluate

    view = display.EvaluationProgress(err_console, note=busy_hint(training_threads(opts.threads)))  # progress on stderr
    opts.on_event = view
    try:
        result = evaluate(opts)
    except KeyboardInterrupt:
        view.stop()
        print("interrupted: finished runs are kept; run the same command again to continue", file=sys.stderr)
        return 130
    finally:
        view.stop()
    console.print(display.evaluation_table(result.summary()))
    if result.note:
        err_console.print(f"note: {result.note}")
    console.print(
        f"Trained {result.trained} run(s), skipped {result.skipped} finished earlier. "
        f"Wrote {result.json_path} and {result.plot_path}; stored the summary in study {opts.study!r} "
        f"(export the best finalist: rknas best --study {opts.study} --by evaluation -o best.yaml)"
    )
    return 0


@command()
def rerun(
    study: Study,
    trial: int = typer.Option(..., "--trial", help="The trial number (COMPLETE, or PRUNED with trained epochs)."),
    storage: Storage = None,
    device: Annotated[Device, Flag(help="cpu or cuda (default: where the trial trained, if available).")] = None,
    data_root: DataRoot = None,
    as_json: Annotated[Json, Flag(help="Print one JSON object (recorded, reproduced, agree, ...).")] = False,
):
    """Retrain a trial from its stored configs and seed; compare validation accuracy per epoch (exit 1 if it differs)."""
    from rknas.search.rerun import rerun_trial

    if device is not None:
        usable_device(device)  # before the study is opened
    st = db.open_study(study, storage)
    result = rerun_trial(st, trial, device=device, data_root=data_root)
    if as_json:
        print(json.dumps(result.to_dict()))
    else:
        console.print(display.rerun_table(result))
        for note in result.notes:
            console.print(f"[yellow]note:[/] {note}")
        diverged = f"; diverged: {result.reproduced_diverged}" if result.reproduced_diverged else ""
        verdict = "reproduced exactly" if result.agree else "NOT reproduced"
        console.print(f"Trial {trial}: {verdict} over {len(result.recorded)} recorded epoch(s){diverged}.")
    return 0 if result.agree else 1


@command()
def studies(storage: Storage = None, as_json: Json = False):
    """The studies in a storage with trial counts and best values."""
    import optuna

    _short_lived()

    url = db.storage_url(storage)
    st = db.open_storage(url, create=False)
    rows = [db.summarize(optuna.load_study(study_name=n, storage=st)) for n in db.study_names(st)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    console.print(display.studies_table(rows, url))


@command()
def report(
    study: Study,
    storage: Storage = None,
    output: Path = typer.Option(Path("studies/report.png"), "-o", "--output",
                                help="PNG file to write; a folder: STUDY.png in it."),
    number: Optional[int] = typer.Option(None, "--evaluation", min=1,
                                         help="Show this evaluation (1 = the oldest; default: the most thorough)."),
):
    """Plot a study: progress, accuracy against params (Pareto front), learning curves."""
    _short_lived()
    from rknas.report import Drawer, drawn, plot_evaluation, plot_study  # Optuna and numpy: the drawer has them

    if output.is_dir():
        output = output / f"{study}.png"
    drawer = Drawer.start()  # matplotlib loads on the other core while the study opens and is read
    try:
        st = db.open_study(study, storage)
        console.print(f"Wrote {plot_study(st, output, drawer=drawer)}")
        record = db.StudyRecord.of(st)
        if record.all_evaluations():
            from rknas.evaluate import chosen_evaluation

            evaluation = chosen_evaluation(st, number)
            kept = record.all_evaluations()
            which = f"evaluation {kept.index(evaluation) + 1} of {len(kept)}"
            console.print(display.evaluation_table(evaluation, title=f"{which} ({evaluation.get('evaluated_at', '')})"))
            for i, other in enumerate(kept, 1):
                if other is not evaluation:
                    console.print(f"  also evaluation {i}: {plural(len(other.get('seeds') or []), 'seed')} x "
                                  f"{plural(int(other.get('epochs') or 0), 'epoch')}, {other.get('evaluated_at', '')}, "
                                  f"in {other.get('out')} (--evaluation {i})")
            path = drawn(drawer, plot_evaluation, evaluation["models"], output.with_name(f"{output.stem}_evaluation.png"),
                         f"{study}: evaluation, {evaluation['epochs']} epochs")
            console.print(f"Wrote {path}")
    finally:
        if drawer is not None:
            drawer.close()


@command()
def spaces():
    """The known search spaces (repository, plugins, ./search_spaces)."""
    from rknas.search.space import space_files

    rows = [{"name": n, "provider": p, "file": str(f)} for n, (f, p) in sorted(space_files().items())]
    console.print(display.rows_table(rows, {"name": "space", "provider": "provider", "file": "file"}))


data_app = typer.Typer(help="Download data sets and list where rknas looks for each.", no_args_is_help=True,
                       context_settings=HELP_OPTIONS)
app.add_typer(data_app, name="data")


@command("download", on=data_app)
def data_download(
    name: str = typer.Argument(..., help="A data set that `rknas data list` marks downloadable (cifar10, mnist, ...)."),
    root: Path = typer.Option(..., "--root", help="Where to put it: later the --data-root of search and train."),
    mirror: Optional[str] = typer.Option(
        None, "--mirror", help="URL prefix holding torchvision's files under their own names (default $RKNAS_DATA_MIRROR)."
    ),
):
    """Download a data set: the built-ins in torchvision's format, checked against torchvision's MD5 sums."""
    from rknas.data.download import download

    s = download(name, root, mirror=mirror)
    if s["status"] == "present":
        print(f"{name} is already in {s['root']} ({len(s['files'])} files, {decimal(s['bytes'])}); nothing downloaded")
        return
    print(f"Downloaded {name}" + (f" from {', '.join(s['sources'])}" if s["sources"] else ""))
    for f in s["files"]:
        print(f"  {f['path']}  {decimal(f['bytes'])}")
    print(f"{len(s['files'])} files, {decimal(s['bytes'])}; use them with --data-root {s['root']}")


@command("list", on=data_app)
def data_list(
    root: Optional[Path] = typer.Option(None, "--root", help="The folder to check (the --data-root of search and train)."),
    as_json: Json = False,
):
    """Every known data set: where rknas looks for it, whether it is there, how to get it."""
    from rknas.data.download import list_datasets

    rows = list_datasets(root)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        r["is_there"] = {True: "yes", False: "no", None: "?"}[r["present"]]
    console.print(display.rows_table(rows, {"name": "data set", "is_there": "present", "where": "where", "how": "how to get it"}))


bench_app = typer.Typer(help="Tabulated benchmarks: build a table of trained architectures, replay searches on it.",
                        no_args_is_help=True, context_settings=HELP_OPTIONS)
app.add_typer(bench_app, name="bench")


@command("build", on=bench_app)
def bench_build(opts: BenchBuildOptions):
    """Train a sample of a space's architectures once (full curves, several seeds) into a table.

    Runs on Ray like a search; each finished run is appended, so the same command continues
    an interrupted build. A table built with other settings is refused.
    """
    from rknas.bench.build import build_table

    view = display.BenchProgress(console)
    opts.on_event = view
    try:
        summary = build_table(opts)
    finally:
        view.stop()
    console.print(
        f"{summary['path']}: {summary['archs']} architectures x {summary['seeds']} seeds, {summary['runs']} runs "
        f"({summary['new_runs']} new, {summary['failed']} failed), {summary['epochs']} epochs each; "
        f"training time {summary['train_s'] / 3600:.2f} h, wall {summary['wall_s'] / 60:.1f} min."
    )


@command("replay", on=bench_app)
def bench_replay(opts: BenchReplayOptions):
    """Replay search strategies against a table in simulated time: anytime regret over many repeats.

    Uses the samplers and the ASHA scheduler of `rknas search`; a proposal is looked up in the
    table (one of its seeds drawn per trial), its recorded epoch times make the clock.
    """
    from rknas.bench.replay import run_replay

    view = display.ReplayProgress(console, quiet=opts.as_json)
    opts.on_event = view
    try:
        result = run_replay(opts)
    finally:
        view.stop()
    if opts.as_json:
        print(json.dumps({**result, "summaries": [s.to_json() for s in result["summaries"]]}, indent=1))
        return
    console.print(display.replay_table(result, opts.target))
    for f in result["files"]:
        console.print(f"Wrote {f}")


@command("pack", on=bench_app)
def bench_pack(
    table_path: Path = typer.Option(..., "--table", help="A table (.db), possibly still being built."),
    out: Path = typer.Option(..., "--out", help="The gzipped copy to write (.db.gz), e.g. to commit or share."),
):
    """A consistent gzipped copy of a table (whole runs only), safe while a build appends to it."""
    from rknas.bench.table import pack

    info = pack(table_path, out)
    console.print(f"Wrote {out}: {info['archs']} architectures with runs, {info['runs']} runs, {decimal(info['bytes'])}")


@command("proxies", on=bench_app)
def bench_proxies(opts: BenchProxiesOptions):
    """Zero-cost proxies (synflow, naswot, grad_norm; params as the baseline) against the table's accuracy."""
    from rknas.bench.proxies import measure_proxies
    from rknas.util import write_json_atomic

    result = measure_proxies(opts.table, batch=opts.batch, data_root=opts.data_root, download=opts.download)
    if opts.out is not None:
        write_json_atomic(opts.out, result)
    if opts.as_json:
        print(json.dumps(result["ranking"], indent=1))
        return
    n = result["ranking"][0]["n"] if result["ranking"] else 0
    rows = [{**r, "spearman": f"{r['spearman']:+.3f}", "kendall": f"{r['kendall']:+.3f}",
             "cost": f"{r['seconds_per_arch'] * 1000:.0f} ms"} for r in result["ranking"]]
    title = f"{opts.table}: proxies at initialisation against mean test accuracy, {n} architectures"
    columns = {"proxy": "proxy", "kendall": "Kendall tau", "spearman": "Spearman", "cost": "cost per architecture"}
    console.print(display.rows_table(rows, columns, title=title))
    if opts.out is not None:
        console.print(f"Wrote {opts.out}")


@command("export")
def export_cmd(
    model_pt: Path = typer.Argument(..., help="RUN/model.pt written by `rknas train`."),
    fmt: str = typer.Option(..., "--format", help="onnx or torchscript."),
    output: Path = typer.Option(..., "-o", "--output", help="The file to write."),
):
    """Export a trained model to ONNX or TorchScript (input: images scaled to [0, 1]; normalisation included)."""
    from rknas.export import export_model  # torch

    info = export_model(model_pt, fmt, output)
    shape = "x".join(map(str, info["input_shape"]))
    print(
        f"Wrote {info['path']} ({info['format']}, {decimal(info['bytes'])}): input float {shape} scaled to [0, 1], "
        f"output logits; max abs difference from PyTorch on a random batch: {info['max_abs_diff']:.2e}"
    )


_owns_process = False  # main() sets it when it runs the command line: the process ends with the command


def _short_lived() -> None:
    """A read-only command in a process of its own: no cyclic garbage collection.

    The collector walks every object of Optuna, SQLAlchemy and matplotlib again and again while
    a large study is read (a quarter second of ``report`` on ten thousand trials), to free the
    few cycles a process that ends in seconds leaves. A caller's process (a notebook, the
    tests) keeps its collector.
    """
    if _owns_process:
        import gc

        gc.disable()


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback.

    Args:
        argv: The arguments (default: the command line's, and then the process exits after).
    """
    global _owns_process
    _owns_process = argv is None
    try:
        _run(argv)
    finally:
        if argv is None:  # the process ends next: its objects need no collecting
            # Python's shutdown runs the garbage collector over every object while it unloads
            # the modules, a quarter of a second with Optuna, SQLAlchemy and matplotlib loaded;
            # frozen objects are skipped. Exit handlers still run.
            import gc

            gc.freeze()


def _run(argv: Optional[list[str]]) -> None:
    started = len(STARTED)
    try:
        rv = app(args=argv, prog_name="rknas", standalone_mode=False)
        if rv == 130 and len(STARTED) == started:  # Ctrl-C while typer parsed: it says nothing
            raise typer.Abort()
    except RknasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TyperException as exc:  # usage errors: bad option, missing option, wrong type
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"error: {message}{hint}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except OSError as exc:  # a path the user gave cannot be read or written
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
