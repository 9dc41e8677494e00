"""Parameter and FLOP counts of the comparison models vs the paper's Tables 2 and 3.

Every count is asserted exactly (the integers this package builds) and, where the paper's
printed value is reproduced, also against the printed value at its precision. Rows whose
printed value is not reproduced are listed in PAPER_DIFFERS with the printed value and why; the
README explains each at length.
"""

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

import pytest

from rknas import build_network, count_flops, count_params

# Some rows use the ``_gn`` names of earlier releases: deprecated aliases of the same models (their
# warning is tested in test_baselines_spec.py).
pytestmark = pytest.mark.filterwarnings("ignore:stage strategy '.*_gn' is deprecated:DeprecationWarning")


def matches_printed(value: int, printed: str, unit: float) -> bool:
    """``value`` shows as ``printed`` when rounded or truncated to the printed precision."""
    exact = Decimal(value) / Decimal(str(unit))
    quantum = Decimal(printed)
    step = Decimal(1).scaleb(quantum.as_tuple().exponent)
    return quantum in (exact.quantize(step, ROUND_HALF_UP), exact.quantize(step, ROUND_DOWN))


# Table 2, MNIST framework, k = 32, one period.
# (strategy, s, params, FLOPs, paper params (K), paper FLOPs (M))
TABLE2 = [
    ("preact_bottleneck_gn", 1, 34_858, 7_185_792, "34.86", "7.19"),
    ("preact_gn", 1, 52_234, 8_434_560, "52.23", "8.43"),
    ("rknn_gn", 1, 52_362, 12_415_872, "52.36", "12.44"),
    ("rknet_gn", 1, 52_938, 12_581_760, "52.94", "12.60"),
    ("odenet_gn", 2, 52_938, 18_056_064, "52.94", "18.11"),
    ("densenet", 2, 56_266, 8_657_024, "57.55", "8.65"),
    ("cliquenet", 2, 57_546, 10_131_584, "57.55", "10.27"),
]

# Table 3, CIFAR framework, k = 120,120,120, the same s in each period.
# (strategy, s, params C10, params C100, FLOPs, paper params C10 (M), C100 (M), FLOPs (G))
TABLE3 = [
    ("preact_bottleneck", 1, 112_990, 145_480, 84_690_720, "0.113", "0.145", "0.0845"),
    ("preact", 1, 845_050, 877_540, 740_293_920, "0.845", "0.878", "0.740"),
    ("rknn", 1, 846_490, 878_980, 2_830_482_720, "0.846", "0.879", "2.833"),
    ("rknet", 1, 852_970, 885_460, 2_853_707_040, "0.853", "0.885", "2.857"),
    ("odenet", 2, 852_970, 885_460, 5_663_849_760, "0.853", "0.885", "5.672"),
    ("densenet", 2, 1_044_010, 1_141_300, 930_157_920, "1.044", "1.141", "0.930"),
    ("cliquenet", 2, 1_060_810, 1_158_100, 1_667_437_920, "1.061", "1.158", "1.666"),
]

# Printed values this package does not reproduce, each with why (README, "Where the counts differ").
# The exact counts these models have are asserted in the tables above; a printed value that
# a later fix does reproduce is checked like any other once its row leaves this mapping.
PAPER_DIFFERS = {
    ("mnist", "rknn_gn", "flops"): "12.42 M: element-wise work the convention leaves out",
    ("mnist", "rknet_gn", "flops"): "12.58 M: element-wise work the convention leaves out",
    ("mnist", "odenet_gn", "flops"): "18.06 M: the solver's element-wise work, left out by the convention",
    ("mnist", "densenet", "params"): "56.27 K: the paper prints CliqueNet's 57.55 K for both",
    ("mnist", "cliquenet", "flops"): "10.13 M: the paper prints RKCNN-I-2's 10.27 M",
    ("cifar", "rknn", "flops"): "2.830 G: element-wise work the convention leaves out",
    ("cifar", "rknet", "flops"): "2.854 G: element-wise work the convention leaves out",
    ("cifar", "odenet", "flops"): "5.664 G: the solver's element-wise work, left out by the convention",
    ("cifar", "preact_bottleneck", "flops"): "0.0845 G printed, 0.08469 G built: 0.23% low in the paper; no variant with the same params removes it",
    ("cifar", "cliquenet", "flops"): "1.666 G printed, 1.6674 G built: 0.09% low in the paper, every param count matching",
}


def printed_or_documented(value, printed, unit, key):
    """The printed value is reproduced, or the row says why not (its exact count is asserted apart)."""
    return matches_printed(value, printed, unit) or bool(PAPER_DIFFERS.get(key))


def mnist(strategy, s, **kw):
    return {"framework": "mnist", "strategy": strategy, "stages": s, "k": 32, **kw}


def cifar(strategy, s, **kw):
    return {"strategy": strategy, "stages": [s] * 3, "k": [120] * 3, **kw}


def test_matches_printed_is_strict():
    assert matches_printed(12_415_872, "12.41", 1e6) and matches_printed(12_415_872, "12.42", 1e6)
    assert not matches_printed(12_415_872, "12.44", 1e6)


@pytest.mark.parametrize("strategy,s,params,flops,paper_params,paper_flops", TABLE2)
def test_table2_mnist(strategy, s, params, flops, paper_params, paper_flops):
    model = build_network(mnist(strategy, s))
    assert count_params(model) == params
    assert count_flops(model) == flops
    assert printed_or_documented(params, paper_params, 1e3, ("mnist", strategy, "params"))
    assert printed_or_documented(flops, paper_flops, 1e6, ("mnist", strategy, "flops"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy,s,params10,params100,flops,paper10,paper100,paper_flops", TABLE3)
def test_table3_cifar(strategy, s, params10, params100, flops, paper10, paper100, paper_flops):
    model = build_network(cifar(strategy, s))
    assert count_params(model) == params10
    assert count_flops(model) == flops
    assert count_params(build_network(cifar(strategy, s, classes=100))) == params100
    assert matches_printed(params10, paper10, 1e6) and matches_printed(params100, paper100, 1e6)
    assert printed_or_documented(flops, paper_flops, 1e9, ("cifar", strategy, "flops"))


@pytest.mark.parametrize("gn,bn", [("preact_gn", "preact"), ("preact_bottleneck_gn", "preact_bottleneck"),
                                   ("rknn_gn", "rknn"), ("rknet_gn", "rknet"), ("odenet_gn", "odenet")])
def test_norm_variants_have_the_same_counts(gn, bn):
    a, b = build_network(mnist(gn, 2)), build_network(mnist(bn, 2))
    assert count_params(a) == count_params(b) and count_flops(a) == count_flops(b)


def test_paper_evaluation_counts():
    """What the printed FLOPs pin down: RK4 4 evaluations, explicit ODE-Net 8 (s=2), and the
    implicit ODE-Net's lower bound of 9 (two starter steps plus one corrector)."""
    per_eval = 2 * (2 * 33 * 9 * 32 * 36)  # two 3x3 convs (32+1 -> 32) on 6x6, one image
    base = count_flops(build_network(mnist("preact_gn", 1))) - 2 * (2 * 32 * 9 * 32 * 36)
    assert count_flops(build_network(mnist("rknet_gn", 1))) == base + 4 * per_eval
    assert count_flops(build_network(mnist("odenet_gn", 2))) == base + 8 * per_eval
    implicit = count_flops(build_network(mnist("odenet_implicit_gn", 3)))
    assert implicit >= base + 10 * per_eval  # 4 + 4 + f(t2) + >= 1 corrector evaluation
    assert implicit > 19.49e6  # the paper's lower bound


@pytest.mark.slow
def test_implicit_odenet_cifar_respects_the_papers_lower_bound():
    model = build_network(cifar("odenet_implicit", 3))
    assert count_params(model) == 852_970
    assert count_flops(model) > 6.375e9
