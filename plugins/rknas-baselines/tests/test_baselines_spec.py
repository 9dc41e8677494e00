"""The norm comes from the BlockSpec (the framework), not from the strategy's name; the old
``_gn`` names are deprecated aliases with the same blocks and counts."""

import warnings

import pytest
import torch
from torch import nn

import rknas
from rknas import BlockSpec, build_network, count_flops, count_params
from rknas.testing import check_strategy
from rknas_baselines.plugin import STRATEGIES

NORMED = ["preact", "preact_bottleneck", "rknn", "rknet", "odenet", "odenet_implicit"]


def norms(module):
    return {type(m) for m in module.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))}


def test_builders_take_a_spec_and_no_name_carries_the_norm():
    assert not any(st.positional_builder for st in STRATEGIES)
    names = {st.name for st in STRATEGIES}
    assert {f"{n}_gn" for n in NORMED} <= names  # kept, as deprecated aliases
    assert all("deprecated" in st.description for st in STRATEGIES if st.name.endswith("_gn"))


@pytest.mark.parametrize("name", NORMED)
def test_the_framework_chooses_the_norm(name):
    s = 3
    assert norms(check_strategy(name, channels=8, stages=s)) == {nn.BatchNorm2d}
    assert norms(check_strategy(name, channels=8, stages=s, framework="mnist", norm="group")) == {nn.GroupNorm}
    model = build_network({"framework": "mnist", "strategy": name, "stages": s, "k": 8})
    assert norms(model.periods[0]) == {nn.GroupNorm}
    model = build_network({"strategy": [name, name], "stages": s, "k": 4, "image_size": 8})
    assert norms(model.periods[0]) == {nn.BatchNorm2d}


def test_dense_and_clique_blocks_keep_batchnorm_like_the_rk_blocks():
    for name in ("densenet", "cliquenet"):
        assert norms(check_strategy(name, channels=4, framework="mnist", norm="group")) == {nn.BatchNorm2d}


def test_implicit_tolerance_follows_the_norm():
    assert check_strategy("odenet_implicit", stages=3).tol == 0.9
    assert check_strategy("odenet_implicit", stages=3, framework="mnist", norm="group").tol == 0.5


def test_table2_needs_no_gn_names():
    """The paper's MNIST models by their plain names: the counts of Table 2."""
    model = build_network({"framework": "mnist", "strategy": "preact", "stages": 1, "k": 32})
    assert (count_params(model), count_flops(model)) == (52_234, 8_434_560)
    model = build_network({"framework": "mnist", "strategy": "rknet", "stages": 1, "k": 32})
    assert (count_params(model), count_flops(model)) == (52_938, 12_581_760)


@pytest.mark.parametrize("name", NORMED)
def test_gn_aliases_are_deprecated_and_build_the_same_mnist_model(name):
    s = 3
    torch.manual_seed(0)  # the same weights: an implicit solver's FLOPs depend on them (its iterations)
    plain = build_network({"framework": "mnist", "strategy": name, "stages": s, "k": 8})
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match=f"'{name}_gn' is deprecated: use '{name}'"):
        alias = build_network({"framework": "mnist", "strategy": f"{name}_gn", "stages": s, "k": 8})
    assert str(alias) == str(plain)
    assert (count_params(alias), count_flops(alias)) == (count_params(plain), count_flops(plain))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert norms(check_strategy(f"{name}_gn", BlockSpec(channels=8, stages=s))) == {nn.GroupNorm}  # even in cifar
    assert rknas.get_strategy(f"{name}_gn").min_stages == rknas.get_strategy(name).min_stages
