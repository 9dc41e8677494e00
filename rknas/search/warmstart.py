"""Warm start: known designs as a space's first trials.

A space's ``start_from:`` entries (and ``rknas search --start-from NAME``) are registered
model names (``rknas models``) or mappings of architecture/training keys; a mapping may
also name a ``model`` and override some of its keys. An entry may also name where earlier
searches ended (transfer): ``{study: NAME, storage: URL, top: N}`` stands for the study's top N
configurations (``rknas best``'s order), ``{table: FILE, top: N}`` for a bench table's top N
architectures by their mean over seeds; each gives the architecture settings the space searches.
Each entry is translated into the space's Optuna parameter names by running the space's own
``sample`` against it, so the names (``p1_strategy``, ``p1_stages`` or ``p1_stages_min2``,
``p1_k``, ``attention``, ``lr``, ...) are exactly those a sampled trial gets. A key the entry does not give is sampled; a
value the space does not allow, or a model that does not fit the space's framework,
periods or data, is an error naming the entry.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import optuna

from rknas.errors import ConfigError
from rknas.models.registry import model_config
from rknas.search.params import (
    NETWORK_FROM_SPACE,
    is_stages_at_least,
    per_period_fields,
    period_param,
    setting_of,
    stages_at_least,
)
from rknas.strategies.lookup import strategies

if TYPE_CHECKING:  # space.py imports this module when it checks start_from: no import back
    from rknas.search.space import SearchSpace

Entry = Union[str, dict[str, Any]]

_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: bools only equal bools, numbers compare by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return bool(a == b)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Fit:
    """Stands in for an ``optuna.Trial`` in ``SearchSpace.sample``: answers each suggestion
    with the entry's value after checking the space allows it, and keeps the names."""

    def __init__(self, target: dict[str, Any], what: str):
        self.target = target
        self.what = what
        self.params: dict[str, Any] = {}
        self.asked: set[str] = set()

    def _given(self, name: str) -> Any:
        key = setting_of(name)
        self.asked.add(key)
        return self.target.get(key, _MISSING)

    def _bad(self, name: str, value: Any, allowed: str) -> ConfigError:
        return ConfigError(f"{self.what}: {name} = {value!r} is not in the space ({allowed})")

    def suggest_categorical(self, name: str, choices: list) -> Any:
        value = self._given(name)
        if value is _MISSING:
            return choices[0]  # a stand-in; the real trial samples it
        match = [c for c in choices if _same(c, value)]
        if not match:
            raise self._bad(name, value, f"choices {list(choices)}")
        self.params[name] = match[0]
        return match[0]

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        value = self._given(name)
        if value is _MISSING:
            return low
        if not (_number(value) and float(value).is_integer() and low <= value <= high and (int(value) - low) % step == 0):
            raise self._bad(name, value, f"integers {low}..{high}" + (f" in steps of {step}" if step != 1 else ""))
        self.params[name] = int(value)
        return int(value)

    def suggest_float(self, name: str, low: float, high: float, step: Optional[float] = None, log: bool = False) -> float:
        value = self._given(name)
        if value is _MISSING:
            return low
        eps = 1e-9 * max(1.0, abs(high))
        ok = _number(value) and low - eps <= value <= high + eps
        if ok and step:
            n = (value - low) / step
            ok = math.isclose(n, round(n), abs_tol=1e-6)
        if not ok:
            raise self._bad(name, value, f"{low}..{high}" + (f" in steps of {step}" if step else "") + (" (log)" if log else ""))
        self.params[name] = float(value)
        return float(value)


def _label(entry: Entry) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and "model" in entry:
        return f"{entry['model']} with {', '.join(k for k in entry if k != 'model') or 'no changes'}"
    return "{" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}" if isinstance(entry, dict) else repr(entry)


def _model_settings(space: SearchSpace, name: str, what: str) -> dict[str, Any]:
    """A registered model's architecture settings, checked against the space's framework, periods and data."""
    try:
        cfg = model_config(name)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc} (`rknas models`)") from None
    problems = []
    if cfg.framework != space.framework:
        problems.append(f"it is a {cfg.framework}-framework model, the space's framework is {space.framework}")
    if cfg.periods != space.periods:
        problems.append(f"it has {cfg.periods} period(s), the space {space.periods}")
    if space.in_channels is not None and cfg.in_channels != space.in_channels:
        problems.append(f"it takes {cfg.in_channels} input channel(s), the data has {space.in_channels}")
    if space.image_size is not None and cfg.image_size != space.image_size:
        problems.append(f"it takes {cfg.image_size}x{cfg.image_size} images, the data has {space.image_size}x{space.image_size}")
    if problems:
        raise ConfigError(f"{what}: model {name!r} does not fit: {'; '.join(problems)}")
    dumped = cfg.model_dump()
    fields = [k for k in type(space.arch).model_fields if k != "periods"]
    return {k: dumped[k] for k in fields if dumped.get(k) is not None}


def _settings(space: SearchSpace, entry: Entry, what: str) -> dict[str, Any]:
    """The architecture/training settings an entry gives (a model's, then the mapping's)."""
    arch_keys = [k for k in type(space.arch).model_fields if k != "periods"]
    training: Any = space.training  # its class is derived at import (see SearchSpace.arch)
    train_keys = list(type(training).model_fields)
    if isinstance(entry, str):
        return _model_settings(space, entry, what)
    if not isinstance(entry, dict):
        raise ConfigError(f"{what}: an entry is a model name or a mapping of settings, got {type(entry).__name__}")
    settings: dict[str, Any] = {}
    if "model" in entry:
        if not isinstance(entry["model"], str):
            raise ConfigError(f"{what}: model must be a model name (`rknas models`), got {entry['model']!r}")
        settings.update(_model_settings(space, entry["model"], what))
    unknown = [k for k in entry if k != "model" and k not in arch_keys and k not in train_keys]
    if unknown:
        fixed_by_space = [k for k in unknown if k in NETWORK_FROM_SPACE or k == "periods"]
        why = f" ({', '.join(fixed_by_space)}: set by the space and its data)" if fixed_by_space else ""
        raise ConfigError(f"{what}: unknown key(s) {', '.join(map(repr, unknown))}{why}; allowed: model, "
                          f"{', '.join(arch_keys + train_keys)}")
    settings.update({k: v for k, v in entry.items() if k != "model"})
    return settings


def _targets(space: SearchSpace, settings: dict[str, Any], what: str) -> dict[str, Any]:
    """Settings under the space's parameter names: per-period lists become p1_k, p2_k, ..."""
    per = set(per_period_fields(space.config_classes[0]))
    target: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in per:
            target[key] = value
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if len(values) == 1:
            values = values * space.periods
        if len(values) != space.periods:
            raise ConfigError(f"{what}: {key} has {len(values)} values, the space has {space.periods} period(s)")
        target.update({period_param(p, key): v for p, v in enumerate(values, 1)})
    return target


SOURCE_KEYS = {"study": ("study", "storage", "top"), "table": ("table", "top")}
DEFAULT_TOP = 5


def _source(entry: Entry) -> Optional[str]:
    """"study" or "table" for an entry that names where earlier searches ended; None otherwise."""
    if isinstance(entry, dict):
        for kind in SOURCE_KEYS:
            if kind in entry:
                return kind
    return None


def _shorthand(entry: Entry) -> Entry:
    """``study:NAME[:N]`` and ``table:FILE[:N]`` (``rknas search --start-from``) as the mappings they stand for."""
    if isinstance(entry, str):
        for kind in SOURCE_KEYS:
            if entry.startswith(kind + ":"):
                rest = entry[len(kind) + 1:]
                head, _, top = rest.rpartition(":")
                if head and top.isdigit():
                    return {kind: head, "top": int(top)}
                return {kind: rest}
    return entry


def _searched_settings(space: SearchSpace, network: dict[str, Any]) -> dict[str, Any]:
    """A recorded network's settings for the architecture keys the space searches (the rest are the space's).

    A searched key holds a list of choices or a ``space.Range`` (a pydantic model; this module
    does not import space.py, which imports it).
    """
    from pydantic import BaseModel

    keys = [k for k in type(space.arch).model_fields if k != "periods"]
    return {k: network[k] for k in keys if k in network and isinstance(getattr(space.arch, k), (list, BaseModel))}


def _top_of_table(path: str, top: int, what: str) -> list[tuple[str, dict[str, Any]]]:
    from rknas.bench.table import BenchTable

    try:
        with BenchTable.open(Path(path)) as table:
            archs = {a.arch: a for a in table.archs()}
            curves = table.curves()
            runs = table.runs()
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    epochs = max((len(rows) for rows in curves.values()), default=0)
    finals: dict[int, list[float]] = {}
    for arch, seed, status, _ in runs:
        rows = curves.get((arch, seed))
        if status == "ok" and rows and len(rows) == epochs:  # whole runs only, as load_bench counts them
            finals.setdefault(arch, []).append(rows[-1].test_accuracy)
    if not finals:
        raise ConfigError(f"{what}: table {path} has no complete run yet")
    best = sorted(finals, key=lambda a: (-sum(finals[a]) / len(finals[a]), a))[:top]
    return [(f"table arch {a} (mean of {len(finals[a])} seeds {sum(finals[a]) / len(finals[a]):.4f})", archs[a].network)
            for a in best]


def _top_of_study(name: str, url: str, top: int, what: str) -> list[tuple[str, dict[str, Any]]]:
    from rknas.errors import RknasError
    from rknas.storage import TrialRecord, candidates, full, open_study

    try:
        study = open_study(name, url)
        pool = candidates(study, lean=True)
    except RknasError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for i in range(0, len(pool), max(top, 10)):  # in best's order, until `top` distinct networks
        for t in full(study, pool[i:i + max(top, 10)]):
            network = TrialRecord.of(t).network
            key = json.dumps(network, sort_keys=True)
            if network is not None and key not in seen:
                seen.add(key)
                out.append((f"study {name!r} trial {t.number}", network))
                if len(out) == top:
                    return out
    return out


def _expand(space: SearchSpace, entries: list[Entry], where: str,
            storage: Optional[str]) -> list[tuple[str, Entry]]:
    """Entries with each study or table entry replaced by its top networks' settings, labelled.

    A study entry without its own ``storage`` is read from ``storage`` (the search's); when that
    is not known yet (a space checked on its own), the entry is left for the search to expand.
    """
    out: list[tuple[str, Entry]] = []
    for i, entry in enumerate(entries):
        entry = _shorthand(entry)
        kind = _source(entry)
        if kind is None:
            out.append((f"{where}[{i}] ({_label(entry)})", entry))
            continue
        assert isinstance(entry, dict)
        what = f"{where}[{i}] ({kind} {entry[kind]!r})"
        unknown = [k for k in entry if k not in SOURCE_KEYS[kind]]
        if unknown:
            raise ConfigError(f"{what}: unknown key(s) {', '.join(map(repr, unknown))}; a {kind} entry takes "
                              f"{', '.join(SOURCE_KEYS[kind])}")
        top = entry.get("top", DEFAULT_TOP)
        if not isinstance(top, int) or isinstance(top, bool) or top < 1:
            raise ConfigError(f"{what}: top must be a whole number of networks, 1 or more (got {top!r})")
        if kind == "table":
            networks = _top_of_table(str(entry["table"]), top, what)
        else:
            url = entry.get("storage") or storage
            if url is None:
                continue
            networks = _top_of_study(str(entry["study"]), str(url), top, what)
        out += [(f"{what}, {label}", _searched_settings(space, net)) for label, net in networks]
    return out


def start_params(space: SearchSpace, entries: Optional[list[Entry]] = None, where: Optional[str] = None,
                 storage: Optional[str] = None) -> list[dict[str, Any]]:
    """Translate warm-start entries into Optuna parameters of ``space`` (for ``enqueue_trial``).

    Args:
        space: The search space. Its ``in_channels`` and ``image_size``, once the data has
            filled them (``runner.load_data``), are checked against named models; before,
            only the framework and the number of periods are.
        entries: Model names or mappings (default: the space's ``start_from``).
        where: What names the entries in error messages, followed by ``[i]`` (default:
            ``space 'NAME': start_from``).
        storage: The search's storage URL: where a ``{study: NAME}`` entry without its own
            ``storage`` is read (None: such entries are not expanded yet).

    Returns:
        One parameter dict per entry, holding the searched parameters the entry sets;
        anything else is sampled when the trial runs.

    Raises:
        ConfigError: An entry that does not fit: an unknown model or key, a model for
            another framework, number of periods, channels or image size, or a value
            outside the space's choices or ranges; a study or table that does not exist or
            holds networks the space cannot express. The message names the entry.
    """
    entries = space.start_from if entries is None else entries
    known = strategies()
    out = []
    for what, entry in _expand(space, entries, where or f"space {space.name!r}: start_from", storage):
        target = _targets(space, _settings(space, entry, what), what)
        fit = _Fit(target, what)
        fixed = space.sample(fit)
        for name, value in fixed.items():  # values the space fixes: the entry must agree
            given = target.get(name, _MISSING)
            if given is not _MISSING and not _same(given, value) and not is_stages_at_least(name):
                raise fit._bad(name, given, f"fixed at {value!r}")
        params = dict(fit.params)
        # A stage count given without its strategy: the sampled strategy may need more stages,
        # and then sample() names the parameter p<N>_stages_min<m>; give those names too.
        for p in range(1, space.periods + 1):
            stages = target.get(period_param(p, "stages"), _MISSING)
            if period_param(p, "strategy") not in target and stages is not _MISSING:
                for m in sorted({known[s].min_stages for s in space.strategies() if s in known}):
                    if m > 1 and _number(stages) and stages >= m:
                        params.setdefault(stages_at_least(p, m), int(stages))
        missed = sorted(k for k in target if k not in fit.asked and k not in fixed)
        if missed:
            raise ConfigError(f"{what}: {', '.join(missed)} are not parameters of the space")
        out.append(params)
    return out


def enqueue_starts(study: optuna.Study, params: list[dict[str, Any]]) -> int:
    """Enqueue translated entries as the study's next trials, skipping ones it already has.

    Returns:
        How many entries were given (Optuna skips exact repeats).
    """
    for p in params:
        study.enqueue_trial(p, skip_if_exists=True)
    return len(params)
