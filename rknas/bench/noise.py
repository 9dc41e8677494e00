"""The seed noise floor: how far apart two networks must be before a few seeds can tell them apart.

Both the benchmark table (several seeds of each architecture) and ``rknas evaluate`` (several
seeds of each finalist) measure the same thing: the spread of test accuracy over training
seeds of one network. Pooled over networks it gives ``sigma``; the difference of two means of
``n`` seeds each then has standard error ``sigma * sqrt(2 / n)``. A difference under
``z(0.975)`` of those is not significant at 5% (two-sided), and telling a true difference
``delta`` apart with 80% power needs ``n >= 2 * ((z(0.975) + z(0.8)) * sigma / delta) ** 2``.

The pooled spread is dominated by a few unstable networks (on the Fashion-MNIST table one
architecture's two seeds differ by 33 points), so a table also reports the *typical* spread, a
median-based estimate that such networks do not move, and counts the networks it calls unstable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist, fmean
from typing import Any, Optional

ALPHA = 0.05
POWER = 0.8
_Z_ALPHA = NormalDist().inv_cdf(1 - ALPHA / 2)
_Z_POWER = NormalDist().inv_cdf(POWER)


def pooled_std(groups: Sequence[Sequence[float]]) -> tuple[Optional[float], int]:
    """The seed spread pooled over networks.

    Args:
        groups: Per network, its accuracies over seeds (networks with one seed add nothing).

    Returns:
        ``(sigma, degrees of freedom)``; sigma is None with no network of two or more seeds.
    """
    ss, df = 0.0, 0
    for g in groups:
        if len(g) > 1:
            m = fmean(g)
            ss += sum((x - m) ** 2 for x in g)
            df += len(g) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def typical_std(groups: Sequence[Sequence[float]]) -> Optional[float]:
    """The seed spread of a typical network, robust to a few unstable ones.

    Each seed's deviation from its network's mean, scaled by ``sqrt(n / (n - 1))`` so that it has
    the seed spread as its standard deviation, then 1.4826 times the median absolute value (the
    normal distribution's MAD-to-sigma factor). For two seeds this is ``median|a - b| / (0.6745 * sqrt 2)``.

    Args:
        groups: Per network, its accuracies over seeds (networks with one seed add nothing).

    Returns:
        The estimate, or None with no network of two or more seeds.
    """
    dev = sorted(abs(x - fmean(g)) * math.sqrt(len(g) / (len(g) - 1)) for g in groups if len(g) > 1 for x in g)
    if not dev:
        return None
    mid = len(dev) // 2
    median = dev[mid] if len(dev) % 2 else (dev[mid - 1] + dev[mid]) / 2
    return 1.4826 * median


def unstable(groups: Sequence[Sequence[float]], typical: Optional[float], k: float = 5.0) -> int:
    """Networks whose seeds spread more than ``k`` typical spreads (the range over ``k * typical * sqrt 2``)."""
    if not typical:
        return 0
    return sum(1 for g in groups if len(g) > 1 and max(g) - min(g) > k * typical * math.sqrt(2))


def seeds_needed(sigma: float, delta: float) -> int:
    """Seeds per network to tell a true difference ``delta`` apart (5% two-sided, 80% power)."""
    if sigma <= 0:
        return 1
    return max(2, math.ceil(2 * ((_Z_ALPHA + _Z_POWER) * sigma / delta) ** 2))


def within_noise(difference: float, sigma: Optional[float], n: int) -> Optional[bool]:
    """Whether a difference of two means of ``n`` seeds is inside the seed spread (not significant at 5%).

    Returns:
        None when the spread is unknown (no sigma, or one seed).
    """
    if sigma is None or n < 2:
        return None
    return abs(difference) < _Z_ALPHA * sigma * math.sqrt(2 / n)


def noise_summary(groups: Sequence[Sequence[float]], delta: float = 0.003) -> dict[str, Any]:
    """The spread of a set of networks' seeds, for a report.

    Returns:
        ``sigma`` (pooled), ``df``, ``networks``, ``delta``, ``seeds_for_delta`` (seeds per network to
        resolve ``delta`` at the pooled spread), ``sigma_typical``, ``seeds_for_delta_typical`` and
        ``unstable`` (networks beyond 5 typical spreads).
    """
    sigma, df = pooled_std(groups)
    typical = typical_std(groups)
    return {"sigma": sigma, "df": df, "networks": sum(len(g) > 1 for g in groups), "delta": delta,
            "seeds_for_delta": None if sigma is None else seeds_needed(sigma, delta),
            "sigma_typical": typical, "seeds_for_delta_typical": None if typical is None else seeds_needed(typical, delta),
            "unstable": unstable(groups, typical)}
