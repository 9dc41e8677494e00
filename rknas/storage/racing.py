"""Racing: a configuration is believed only after it survives re-measurement on new seeds.

One training run's seed noise is larger than the differences a search resolves, so the best
single run is partly a lucky draw. With a space's ``racing: N`` (N >= 2), a configuration
that would become the incumbent is run again before it is believed: the same parameters as a new
trial, with its own seed and a repeat index (``TrialRecord.repeat_of``/``repeat``), costing
budget like any trial, up to N runs. After every complete run the whole study is looked at
(``next_repeat``), not only the configuration just measured: a repeat that lowers the incumbent's
mean can make an earlier configuration the one to check, and a tie is settled by ``RULE`` as if
both had their runs. Repeats run at full fidelity
(``tune_adapter.RepeatAwareASHA`` leaves them alone). The incumbent is chosen by ``RULE``;
``rknas best`` exports by it. With several objectives a configuration joins the reported Pareto
set only once it has its runs (``front``), and one whose mean no such configuration dominates
runs again (``next_repeat_front``).

This module is torch-free and Ray-free; ``bench.regret`` replays the same rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

TIE_RULE = "fewer parameters, then the earlier trial"  # between equal scores, with or without racing
RULE = ("the most runs (counted up to the racing cap) first, then the best mean, then fewer parameters, "
        "then the configuration that completed a run first")
REPEAT_CONFIG_KEY = "rk_repeat"  # in a Tune trial's config: the trial is a re-measurement (tune_adapter.RepeatAwareASHA)


def config_key(params: Mapping[str, Any]) -> str:
    """What makes two trials runs of one configuration: their sampled parameters, seed aside."""
    return json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True, separators=(",", ":"), default=str)


def rank_key(runs: int, mean: float, params: float, order: int, cap: int, maximize: bool = True) -> tuple:
    """The sort key of ``RULE`` (larger is better).

    Args:
        runs: Complete runs of the configuration.
        mean: Their mean objective value.
        params: The network's parameter count.
        order: When the configuration first completed a run (smaller: earlier).
        cap: The racing cap; runs beyond it earn no more precedence.
        maximize: The objective's direction.

    Returns:
        A tuple to compare.
    """
    return min(runs, cap), mean if maximize else -mean, -params, -order


@dataclass
class Group:
    """The complete runs of one configuration, in the order they completed."""

    key: str
    numbers: list[int] = field(default_factory=list)  # trial numbers
    values: list[float] = field(default_factory=list)  # the (first) objective of each run
    params: float = 0.0
    order: int = 0
    points: list[tuple[float, ...]] = field(default_factory=list)  # every objective of each run
    config: dict[str, Any] = field(default_factory=dict)  # the sampled parameters (of its first run)

    @property
    def runs(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def mean_point(self) -> tuple[float, ...]:
        """Each objective's mean over the runs."""
        return tuple(sum(p[j] for p in self.points) / len(self.points) for j in range(len(self.points[0])))


def group_runs(runs: Iterable[tuple[int, Mapping[str, Any], Any, float]]) -> list[Group]:
    """Complete runs grouped by configuration.

    Args:
        runs: ``(trial number, sampled params, objective value(s), parameter count)`` per
            complete run; the value is a number, or a sequence with one per objective.

    Returns:
        One group per configuration, in the order of each one's first run (by trial number).
    """
    found: dict[str, Group] = {}
    for number, params, value, size in sorted(runs, key=lambda r: r[0]):
        key = config_key(params)
        g = found.get(key)
        if g is None:
            g = found[key] = Group(key, params=float(size or 0), order=len(found), config=dict(params))
        point = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),)
        g.numbers.append(number)
        g.values.append(point[0])
        g.points.append(point)
    return list(found.values())


def ranked(groups: Sequence[Group], cap: int, maximize: bool = True) -> list[Group]:
    """The groups best first, by ``RULE``."""
    return sorted(groups, key=lambda g: rank_key(g.runs, g.mean, g.params, g.order, cap, maximize), reverse=True)


def _confirmed(g: Group, cap: int, maximize: bool) -> tuple:
    """``g``'s rank key were its mean confirmed over ``cap`` runs."""
    return rank_key(cap, g.mean, g.params, g.order, cap, maximize)


def next_repeat(groups: Sequence[Group], cap: int, maximize: bool = True,
                pending: Iterable[str] = ()) -> Optional[Group]:
    """The configuration to run again next, if any (one objective).

    The incumbent runs again while it has fewer than ``cap`` runs; so does any configuration
    with fewer than ``cap`` runs that would rank above the incumbent were both means confirmed
    over ``cap`` runs (a tie then goes by ``RULE``: fewer parameters, then the earlier). Of
    several, the one that would rank highest goes first; the others wait for later steps.

    Args:
        groups: The study's complete runs, grouped (``group_runs``).
        cap: The racing cap; 1 or less: never.
        maximize: The objective's direction.
        pending: Keys of configurations whose repeat is already waiting or running (skipped).

    Returns:
        The group to repeat, or None.
    """
    if cap <= 1 or not groups:
        return None
    best = ranked(groups, cap, maximize)[0]
    bar = _confirmed(best, cap, maximize)
    skip = set(pending)
    due = [g for g in groups if g.runs < cap and g.key not in skip
           and (g is best or _confirmed(g, cap, maximize) > bar)]
    return max(due, key=lambda g: _confirmed(g, cap, maximize), default=None)


REPEAT_OF, REPEAT = "repeat_of", "repeat"  # the user attributes (``TrialRecord`` fields) that mark a repeat


def repeat_attrs(group: Group) -> dict[str, int]:
    """The user attributes of the next repeat of a group (``TrialRecord.repeat_of``/``repeat``)."""
    return {REPEAT_OF: group.numbers[0], REPEAT: group.runs}


def repeat_marker(attrs: Mapping[str, Any]) -> Optional[tuple[int, int]]:
    """``(repeat_of, repeat)`` of a trial that is a repeat, from its user attributes; None otherwise."""
    of, k = attrs.get(REPEAT_OF), attrs.get(REPEAT)
    return None if of is None or k is None else (int(of), int(k))


def dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[float]) -> bool:
    """Whether point ``a`` dominates ``b`` (``signs``: +1 to maximise an objective, -1 to minimise)."""
    better = [s * x >= s * y for x, y, s in zip(a, b, signs)]
    return all(better) and any(s * x > s * y for x, y, s in zip(a, b, signs))


def front(groups: Sequence[Group], cap: int, signs: Sequence[float]) -> list[Group]:
    """The Pareto set a racing study reports: configurations with ``cap`` runs that no other such
    configuration dominates, by their mean points. Before any configuration has its runs, the
    non-dominated set of all of them (on fewer runs)."""
    believed = [g for g in groups if g.runs >= cap] or list(groups)
    return [g for g in believed if not any(dominates(o.mean_point, g.mean_point, signs) for o in believed if o is not g)]


def next_repeat_front(groups: Sequence[Group], cap: int, signs: Sequence[float],
                      pending: Iterable[str] = ()) -> Optional[Group]:
    """The configuration to run again next with several objectives, if any.

    One with fewer than ``cap`` runs whose mean point no configuration with its runs dominates
    (it would join the front); of several, the best by the first objective's mean, then fewer
    parameters, then the earlier.

    Args:
        groups: The study's complete runs, grouped (``group_runs``).
        cap: The racing cap; 1 or less: never.
        signs: +1 to maximise an objective, -1 to minimise it, per objective.
        pending: Keys of configurations whose repeat is already waiting or running (skipped).

    Returns:
        The group to repeat, or None.
    """
    if cap <= 1:
        return None
    believed = [o for o in groups if o.runs >= cap]
    skip = set(pending)
    due = [g for g in groups if g.runs < cap and g.key not in skip
           and not any(dominates(o.mean_point, g.mean_point, signs) for o in believed)]
    return max(due, key=lambda g: (signs[0] * g.mean_point[0], -g.params, -g.order), default=None)
