"""SizeLimit: the one definition of "fits" (search constraints, --max-params/--max-flops in best and evaluate)."""

import pytest

from rknas.config import SizeLimit


@pytest.mark.parametrize("limit,params,flops,why", [
    ({}, 10**9, 10**12, None),
    ({"max_params": 100}, 100, 10**9, None),
    ({"max_params": 100}, 101, 0, "params 101 > max_params 100"),
    ({"max_flops": 1e6}, 1, 1_000_001, "FLOPs 1,000,001 > max_flops 1,000,000"),
    ({"max_params": 100, "max_flops": 1e6}, 101, 2e6, "params 101 > max_params 100"),  # params are named first
    ({"max_params": 100}, None, None, None),  # unknown sizes are not held against a trial
])
def test_violation_and_admits(limit, params, flops, why):
    s = SizeLimit(**limit)
    assert s.violation(params, flops) == why
    assert s.admits(params, flops) is (why is None)


def test_constraint_values_are_relative_excess_of_known_limited_sizes():
    s = SizeLimit(max_params=100, max_flops=1000)
    assert s.constraint_values(150, 500) == {"max_params": 0.5, "max_flops": -0.5}
    assert s.constraint_values(None, 500) == {"max_flops": -0.5}
    assert SizeLimit().constraint_values(1, 1) == {}


def test_str_names_the_limits():
    assert str(SizeLimit(max_params=78410, max_flops=1e7)) == "78,410 params and 10,000,000 FLOPs"
    assert str(SizeLimit()) == "no limit" and SizeLimit().unlimited and not SizeLimit(max_flops=1).unlimited
