"""The ``rknas`` command line: a thin typer layer over the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Table

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


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except RknasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
