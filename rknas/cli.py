"""The ``rknas`` command line: a thin typer layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.exceptions import TyperException

from rknas.errors import RknasError

app = typer.Typer(
    help="Neural architecture search over Runge-Kutta CNNs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def _csv(value: Optional[str], cast=str) -> Optional[list]:
    if value is None:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise RknasError(f"could not read {value!r} as a comma-separated list of {cast.__name__}") from None


@app.command()
def strategies(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List every registered stage strategy and the package that provides it."""
    from rknas.plugins import list_strategies

    rows = [
        {"name": s.name, "description": s.description, "min_stages": s.min_stages, "package": s.package, "version": s.version}
        for s in list_strategies()
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "min s", "package", "description")
    for r in rows:
        table.add_row(r["name"], str(r["min_stages"]), f"{r['package']} {r['version']}", r["description"])
    console.print(table)


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List loaded plugins (built-in and installed) with the hooks each implements."""
    from rknas.plugins import load_errors, plugin_info

    rows = plugin_info()
    if as_json:
        print(json.dumps({"plugins": rows, "load_errors": load_errors}, indent=2))
        return
    table = Table("plugin", "package", "version", "hooks")
    for r in rows:
        table.add_row(r["name"], r["package"], r["version"], ", ".join(r["hooks"]))
    console.print(table)
    for err in load_errors:
        console.print(f"[red]not loaded:[/red] {err}")


@app.command()
def models(pattern: str = typer.Argument("*", help="Glob over model names.")):
    """List the named paper models (usable with `rknas describe --model NAME`)."""
    from rknas.models.registry import list_models

    for name in list_models(pattern):
        print(name)


@app.command()
def describe(
    config: Optional[Path] = typer.Argument(None, help="A config file written by `rknas best` (or any YAML with a `network:` section)."),
    model: Optional[str] = typer.Option(None, "--model", help="A named model from `rknas models`."),
    framework: Optional[str] = typer.Option(None, "--framework", help="cifar or mnist."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="One strategy, or one per period: I,I,R."),
    stages: Optional[str] = typer.Option(None, "--stages", help="Stages per period: 5,5,6."),
    k: Optional[str] = typer.Option(None, "--k", help="Channels per period: 150,120,120."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Time steps per period (default 1)."),
    classes: Optional[int] = typer.Option(None, "--classes"),
    in_channels: Optional[int] = typer.Option(None, "--in-channels"),
    image_size: Optional[int] = typer.Option(None, "--image-size"),
    no_attention: bool = typer.Option(False, "--no-attention", help="Plain transitions."),
    no_multiscale: bool = typer.Option(False, "--no-multiscale", help="Only the last period feeds the classifier."),
    width: Optional[float] = typer.Option(None, "--width", help="Bottleneck width factor w."),
    dropout: Optional[float] = typer.Option(None, "--dropout"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Build a network and print its size (params, FLOPs in the paper's convention)."""
    from rknas.models.counting import describe as describe_network
    from rknas.models.network import parse_network_config

    data: dict = {}
    if config is not None:
        from rknas.config import load_network_section

        data.update(load_network_section(config))
    if model is not None:
        from rknas.models.registry import model_config

        data.update(model_config(model).model_dump(exclude_defaults=False))
    overrides = {
        "framework": framework,
        "strategy": _csv(strategy),
        "stages": _csv(stages, int),
        "k": _csv(k, int),
        "steps": _csv(steps, int),
        "classes": classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "width": width,
        "dropout": dropout,
    }
    data.update({key: v for key, v in overrides.items() if v is not None})
    if no_attention:
        data["attention"] = False
    if no_multiscale:
        data["multiscale"] = False
    info = describe_network(parse_network_config(data))
    if as_json:
        print(json.dumps(info))
        return
    table = Table(title=info["name"], show_header=False)
    for key in ("framework", "strategy", "stages", "k", "steps", "classes", "in_channels", "image_size", "attention", "multiscale", "width", "dropout"):
        table.add_row(key, str(info[key]))
    table.add_row("params", f"{info['params']:,} ({info['params'] / 1e6:.3f} M)")
    table.add_row("FLOPs", f"{info['flops']:,} ({info['flops'] / 1e9:.4f} G)")
    console.print(table)


class SearchProgress:
    """Live terminal view of a search: counts, best so far, ETA, one line per finished trial."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self.task = None
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.running = set()
        self.best = None
        self.t0 = None
        self.done_now = 0
        self.remaining = 0

    def __call__(self, kind: str, data: dict) -> None:
        import time

        if kind == "already_done":
            self.console.print(f"The study already has {data['finished']} finished trials (target {data['target']}); nothing to run.")
        elif kind == "start":
            if data["stale"]:
                self.console.print(f"[yellow]{data['stale']} trial(s) left RUNNING by an earlier search were marked FAIL (interrupted).")
            self.console.print(
                f"Study [bold]{data['study']}[/] in {data['storage']}: {data['finished']} of {data['target']} trials finished, "
                f"running {data['remaining']} more, {data['concurrency']} at a time."
            )
            self.t0, self.remaining = time.time(), data["remaining"]
            self.progress.start()
            self.task = self.progress.add_task(data["space"], total=data["target"], completed=data["finished"], stats="starting Ray")
        elif kind == "trial_start":
            self.running.add(data["trial_id"])
        elif kind == "trial_end":
            state, attrs = data["state"], data["attrs"]
            self.counts[state] = self.counts.get(state, 0) + 1
            self.running.discard(data.get("trial_id"))
            self.done_now += 1
            net = attrs.get("network") or {}
            arch = " ".join(f"{s}{n}/k{k}" for s, n, k in zip(net.get("strategy", []), net.get("stages", []), net.get("k", [])))
            size = f"{attrs['params'] / 1e3:.1f}K params" if attrs.get("params") else ""
            if state == "COMPLETE":
                acc = data["values"][0] if isinstance(data["values"], list) else data["values"]
                self.best = acc if self.best is None else max(self.best, acc)
                what = f"[green]COMPLETE[/] val {acc:.4f}"
            elif state == "PRUNED":
                why = attrs.get("constraint_violation") or f"stopped at epoch {attrs.get('pruned_at_epoch')}"
                last = (attrs.get("val_accuracy_per_epoch") or [None])[-1]
                what = f"[yellow]PRUNED[/] {why}" + (f", val {last:.4f}" if last is not None else "")
            else:
                what = f"[red]FAIL[/] {attrs.get('fail_reason', '')}"
            self.progress.console.print(f"  trial {data['number']:>4}  {what}  {arch}  {size}")
        if self.task is not None:
            eta = ""
            if self.done_now:
                left = (time.time() - self.t0) / self.done_now * max(0, self.remaining - self.done_now)
                eta = f" | ETA {int(left // 60)}m{int(left % 60):02d}s"
            best = f"{self.best:.4f}" if self.best is not None else "-"
            stats = (
                f"running {len(self.running)} | pruned {self.counts['PRUNED']} | failed {self.counts['FAIL']} | "
                f"best val {best}{eta}"
            )
            self.progress.update(self.task, advance=1 if kind == "trial_end" else 0, stats=stats)

    def stop(self):
        self.progress.stop()


@app.command()
def search(
    space: str = typer.Option(..., "--space", help="A space name (`rknas spaces`) or a path to a YAML file."),
    trials: int = typer.Option(20, "--trials", help="The study ends with this many finished trials (re-run to continue)."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name (default: the space name)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL (default sqlite:///studies/rknas.db)."),
    address: Optional[str] = typer.Option(None, "--address", help="Join this Ray cluster instead of starting a local one."),
    cpus_per_trial: float = typer.Option(1.0, "--cpus-per-trial"),
    gpus_per_trial: float = typer.Option(0.0, "--gpus-per-trial", help="Fractions share a GPU (0.5 = two trials per GPU)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="Trials at once (default: what the resources allow)."),
    seed: int = typer.Option(0, "--seed"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the space's epochs per trial."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting trials after this many seconds."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Where the data set's files are (overrides the space)."),
    no_early_stopping: bool = typer.Option(False, "--no-early-stopping", help="Train every trial for all its epochs (no ASHA)."),
):
    """Search architectures: Ray Tune runs Optuna trials, the study is stored in SQL."""
    from rknas.search.runner import SearchOptions, run_search

    view = SearchProgress(console)
    opts = SearchOptions(
        space=space, trials=trials, study=study, storage=storage, address=address, cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial, concurrency=concurrency, seed=seed, epochs=epochs, timeout=timeout,
        data_root=data_root, early_stopping=False if no_early_stopping else None, on_event=view,
    )
    try:
        result = run_search(opts)
    finally:
        view.stop()
    counts = ", ".join(f"{v} {k.lower()}" for k, v in result.counts.items())
    console.print(f"Study [bold]{result.study}[/]: {result.finished}/{result.target} finished ({counts}).")
    if result.best:
        b = result.best
        console.print(f"Best: trial {b['number']}, val accuracy {b['val_accuracy']:.4f}, {b['params']:,} params, {b['flops']:,} FLOPs.")
        storage_arg = f" --storage {result.storage}" if storage else ""
        console.print(f"Export it: rknas best --study {result.study}{storage_arg} -o best.yaml")
    if timeout and result.finished < result.target and not result.interrupted:
        console.print(f"Stopped by --timeout {timeout:g}s; run the same command again to continue the study.")
    if result.interrupted:
        print(f"interrupted: {result.finished} of {result.target} trials finished; run the same command to continue", file=sys.stderr)
        return 130
    return 0


@app.command()
def best(
    study: str = typer.Option(..., "--study"),
    storage: Optional[str] = typer.Option(None, "--storage"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the config here (default: print it)."),
    max_params: Optional[float] = typer.Option(None, "--max-params", help="Most accurate candidate with at most this many params."),
    max_flops: Optional[float] = typer.Option(None, "--max-flops", help="... and at most this many FLOPs."),
    trial: Optional[int] = typer.Option(None, "--trial", help="Export this trial number instead."),
):
    """Export the winning config (multi-objective: list the Pareto set, export the most accurate within limits)."""
    import yaml

    from rknas.storage import candidates, choose, export_config, load_study, open_storage, storage_url

    url = storage_url(storage)
    st = load_study(open_storage(url, create=False), study)
    if len(st.directions) > 1:
        metrics = st.user_attrs.get("metrics", [])
        table = Table("trial", *metrics, "params", "FLOPs", "architecture", title=f"Pareto set of {study}")
        for t in candidates(st):
            net = t.user_attrs.get("network", {})
            table.add_row(str(t.number), *[f"{v:.4g}" for v in t.values], f"{t.user_attrs.get('params', 0):,}",
                          f"{t.user_attrs.get('flops', 0):,}", " ".join(f"{a}{b}/k{c}" for a, b, c in zip(net.get("strategy", []), net.get("stages", []), net.get("k", []))))
        Console(stderr=True).print(table)
    chosen = choose(st, max_params=max_params, max_flops=max_flops, trial=trial)
    cfg = export_config(st, chosen, url)
    text = "# rknas config, exported by `rknas best`; train it with `rknas train --config FILE`\n" + yaml.safe_dump(cfg, sort_keys=False)
    if output is None:
        print(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        Console(stderr=True).print(
            f"Wrote {output}: trial {chosen.number}, {cfg['name']}, val accuracy {cfg['provenance']['values'].get('val_accuracy', 0):.4f}, "
            f"{cfg['provenance']['params']:,} params"
        )


@app.command()
def train(
    config: Path = typer.Option(..., "--config", help="A config written by `rknas best`."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the config's epochs."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/<config name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda if available)."),
    data_root: Optional[str] = typer.Option(None, "--data-root"),
):
    """Train a config on train+validation, checkpoint every epoch, report test accuracy."""
    from rich.progress import Progress

    from rknas.train import train_from_config

    with Progress(console=console) as prog:
        task = prog.add_task("training", total=None)

        def on_epoch(epoch, m):
            prog.update(task, completed=epoch, description=f"epoch {epoch}: loss {m['train_loss']:.4f} acc {m['train_accuracy']:.4f}")

        try:
            metrics = train_from_config(config, epochs=epochs, out=out, resume=resume, device=device, data_root=data_root, on_epoch=on_epoch)
        except KeyboardInterrupt:
            prog.stop()
            print("interrupted: the last finished epoch is in the checkpoint; add --resume to the same command to continue",
                  file=sys.stderr)
            return 130
    console.print(
        f"{metrics['name']}: test accuracy {metrics['test_accuracy']:.4f} after {metrics['epochs']} epochs "
        f"({metrics['params']:,} params, {metrics['wall_time_s']:.1f} s). Wrote {metrics['out']}/model.pt and metrics.json"
    )


@app.command()
def studies(storage: Optional[str] = typer.Option(None, "--storage"), as_json: bool = typer.Option(False, "--json")):
    """The studies in a storage with trial counts and best values."""
    import optuna

    from rknas.storage import open_storage, storage_url, study_names, summarize

    url = storage_url(storage)
    st = open_storage(url, create=False)
    rows = [summarize(optuna.load_study(study_name=n, storage=st)) for n in study_names(st)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("study", "space", "objectives", "trials", "states", "best val acc", title=url)
    for r in rows:
        table.add_row(r["study"], str(r["space"]), ", ".join(f"{m} ({d[:3]})" for m, d in zip(r["objectives"], r["directions"])),
                      str(r["trials"]), ", ".join(f"{k.lower()} {v}" for k, v in r["counts"].items()),
                      f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-")
    console.print(table)


@app.command()
def report(
    study: str = typer.Option(..., "--study"),
    storage: Optional[str] = typer.Option(None, "--storage"),
    output: Path = typer.Option(Path("studies/report.png"), "-o", "--output", help="PNG file to write."),
):
    """Plot a study: progress, accuracy against params (Pareto front), learning curves."""
    from rknas.report import plot_study
    from rknas.storage import load_study, open_storage, storage_url

    st = load_study(open_storage(storage_url(storage), create=False), study)
    console.print(f"Wrote {plot_study(st, output)}")


@app.command()
def spaces():
    """The known search spaces (repository, plugins, ./search_spaces)."""
    from rknas.search.space import space_files

    table = Table("space", "provider", "file")
    for name, (path, package) in sorted(space_files().items()):
        table.add_row(name, package, str(path))
    console.print(table)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        rv = app(args=argv, prog_name="rknas", standalone_mode=False)
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
