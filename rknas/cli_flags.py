"""Typer options from pydantic fields: a command's flags are its options model's fields.

``command_flags`` rewrites a command's signature before typer reads it:

- A parameter annotated with an options model (``opts: SearchOptions``) becomes one option per
  field (fields with ``Flag(cli=False)`` left out): the flag is the field's name with dashes (or
  its ``Flag``'s spelling), the help its description, the default its default. The command
  receives the validated model; a bad value is a ``ConfigError`` naming the flag.
- ``Annotated[dict[str, Any], Overrides(Model, ...)]``: one option per field of ``Model``, every
  one optional; the command receives the values given, as a dict, to merge into other input
  before it validates (``rknas describe`` and ``NetworkConfig``).
- A parameter annotated with a shared alias of ``rknas.options`` (``as_json: Json = False``):
  one option, from the alias's description and ``Flag``.

Other parameters are typer's as they are.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, TypeVar, Union, cast, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from typer.models import OptionInfo, ParameterInfo

from rknas.errors import RknasError
from rknas.options import CommandOptions, Flag, merge_flags

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, eq=False)
class Overrides:
    """Marks a ``dict`` parameter that takes ``model``'s fields as optional flags, unvalidated.

    Attributes:
        model: The model whose fields become flags.
        exclude: Fields left off the command line.
        flags: ``Flag``s for fields, over the model's own (help text, switches, comma lists).
    """

    model: type[BaseModel]
    exclude: frozenset[str] = frozenset()
    flags: Mapping[str, Flag] = field(default_factory=dict)


def parse_csv(value: str, cast_to: type = str) -> list:
    """A comma-separated list, each item converted.

    Args:
        value: The text, e.g. ``5,5,6``.
        cast_to: The items' type.

    Returns:
        The items, empty ones left out.

    Raises:
        RknasError: An item does not convert.
    """
    try:
        return [cast_to(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise RknasError(f"could not read {value!r} as a comma-separated list of {cast_to.__name__}") from None


def _split(annotation: Any) -> tuple[Any, list]:
    if get_origin(annotation) is Annotated:
        base, *meta = get_args(annotation)
        return base, meta
    return annotation, []


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``Optional[X]``, else ``(annotation, False)``."""
    if get_origin(annotation) is Union and type(None) in get_args(annotation):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return annotation, False


def _optional(t: Any) -> Any:
    return cast(Any, Optional)[t]


def _option(name: str, annotation: Any, default: Any, description: Optional[str], flag: Flag,
            all_optional: bool = False) -> inspect.Parameter:
    """One typer option for a field or an alias."""
    decls = [flag.name or "--" + name.replace("_", "-")] + ([flag.short] if flag.short else [])
    inner, optional = _strip_none(annotation)
    if flag.switch is not None:
        typ, default = bool, False
    elif flag.csv is not None:
        typ, default = _optional(str), None
    elif get_origin(inner) is list:
        typ, default = _optional(list[get_args(inner)[0] if get_args(inner) else str]), None  # type: ignore[misc]
    else:
        if get_origin(inner) is Literal:
            inner = str
        typ = _optional(inner) if optional or all_optional else inner
        if all_optional:
            default = None
    info = typer.Option(default, *decls, help=flag.help or description, metavar=metavar(name, inner, flag))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=typ)


def metavar(name: str, annotation: Any, flag: Flag) -> str:
    """What the help shows for a flag's value: its unit or its name in capitals (``--budget SECONDS``,
    ``--storage STORAGE``); nothing for on/off flags, which take no value."""
    if flag.switch is not None or annotation is bool:
        return ""
    if flag.unit:
        return flag.unit.upper()
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    return name.upper()


def _field_options(model: type[BaseModel], exclude: frozenset[str] = frozenset(),
                   flags: Optional[Mapping[str, Flag]] = None, all_optional: bool = False,
                   ) -> tuple[list[inspect.Parameter], dict[str, Flag]]:
    params, used = [], {}
    for name, info in model.model_fields.items():
        flag = merge_flags([*info.metadata, *([flags[name]] if flags and name in flags else [])])
        if not flag.cli or name in exclude:
            continue
        default = ... if info.is_required() else info.get_default(call_default_factory=True)
        params.append(_option(name, info.annotation, default, info.description, flag, all_optional))
        used[name] = flag
    return params, used


def _given(value: Any, flag: Flag) -> Any:
    """What the command line gave for a field, as the model takes it; None: not given."""
    if flag.switch is not None:
        return flag.switch if value else None
    if value is None:
        return None
    if flag.csv is not None:
        return parse_csv(value, flag.csv)
    if isinstance(value, (list, tuple)) and not value:
        return None
    return value


# The commands whose body began in this process: typer turns a Ctrl-C that lands while it parses
# into a silent exit 130, which rknas.cli tells apart from a command's own 130 (said by the command).
STARTED: list[str] = []


@dataclass
class _Group:
    param: str
    model: type[BaseModel]
    flags: dict[str, Flag]
    validate: bool


def command_flags(fn: F) -> F:
    """Build a command's flags from its options model and the shared aliases (see the module docstring).

    Args:
        fn: The command function.

    Returns:
        A function with the signature typer reads; it calls ``fn`` with the model (or dict) in
        place of the fields' values.

    Raises:
        TypeError: Two parameters with one name or one flag.
    """
    params: list[inspect.Parameter] = []
    groups: list[_Group] = []
    for p in inspect.signature(fn, eval_str=True).parameters.values():
        base, meta = _split(p.annotation)
        overrides = next((m for m in meta if isinstance(m, Overrides)), None)
        if isinstance(base, type) and issubclass(base, CommandOptions):
            fields, used = _field_options(base)
            params += fields
            groups.append(_Group(p.name, base, used, validate=True))
        elif overrides is not None:
            fields, used = _field_options(overrides.model, overrides.exclude, overrides.flags, all_optional=True)
            params += fields
            groups.append(_Group(p.name, overrides.model, used, validate=False))
        elif any(isinstance(m, (FieldInfo, Flag)) for m in meta):
            description = next((m.description for m in meta if isinstance(m, FieldInfo) and m.description), None)
            default = ... if p.default is inspect.Parameter.empty else p.default
            params.append(_option(p.name, base, default, description, merge_flags(meta)))
        else:
            info = p.default
            if isinstance(info, ParameterInfo) and info.metavar is None:  # a plain typer option or argument
                info.metavar = metavar(p.name, _strip_none(p.annotation)[0], Flag())
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
    _check_unique(fn.__name__, params)

    def command(**kwargs: Any) -> Any:
        STARTED.append(fn.__name__)
        for g in groups:
            values = {name: v for name, flag in g.flags.items() if (v := _given(kwargs.pop(name), flag)) is not None}
            kwargs[g.param] = g.model(**values) if g.validate else values
        try:
            return fn(**kwargs)
        except KeyboardInterrupt:  # typer would make it a silent exit 130; rknas.cli says "interrupted"
            raise typer.Abort() from None

    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        setattr(command, attr, getattr(fn, attr))
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return cast(F, command)


def _check_unique(command: str, params: list[inspect.Parameter]) -> None:
    names: set[str] = set()
    flags: set[str] = set()
    for p in params:
        if p.name in names:
            raise TypeError(f"command {command}: two parameters named {p.name!r}")
        names.add(p.name)
        if isinstance(p.default, OptionInfo):
            for decl in (d for ds in p.default.param_decls or () for d in ds.split("/")):
                if decl in flags:
                    raise TypeError(f"command {command}: two options spelled {decl}")
                flags.add(decl)
