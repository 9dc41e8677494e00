"""The template's tests: registration, a network built through rknas, the contract, the formula."""

from importlib.metadata import PackageNotFoundError, distribution

import pytest
import torch

import rknas
from rknas import build_network, count_params
from rknas.testing import check_strategy
from rknas_heun.block import HeunBlock
from rknas_heun.plugin import HEUN


def test_registered_with_package_and_version():
    st = rknas.get_strategy("heun")
    assert st.package == "rknas-template" and st.version and st.min_stages == 2


def test_entry_point_is_declared():
    try:
        dist = distribution("rknas-template")
    except PackageNotFoundError:
        pytest.skip("not installed (pip install -e plugins/rknas-template)")
    eps = [ep for ep in dist.entry_points if ep.group == "rknas"]
    assert [ep.value for ep in eps] == ["rknas_heun.plugin"]


def test_builds_a_network_through_rknas():
    model = build_network({"strategy": ["heun", "I"], "stages": [2, 2], "k": [4, 6], "image_size": 8})
    out = model(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    mnist = build_network({"framework": "mnist", "strategy": "heun", "stages": 2, "k": 8})
    assert mnist(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_contract_holds():
    block = check_strategy("heun", channels=4, stages=3)  # raises PluginError if broken
    assert isinstance(block, HeunBlock) and len(block.correctors) == 2
    assert isinstance(check_strategy("heun", framework="mnist", norm="group", dropout=0.2), HeunBlock)
    assert not HEUN.positional_builder  # builder(spec): no DeprecationWarning when registered
    with pytest.raises(rknas.ConfigError, match="needs stages >= 2"):
        build_network({"strategy": "heun", "stages": 1, "k": 4, "image_size": 8})


def test_heun_formula():
    torch.manual_seed(0)
    block = HeunBlock(4, 2).eval()
    y = torch.randn(2, 4, 5, 5)
    e1 = block.predictor(y)
    e2 = block.correctors[0](torch.cat([y, e1], 1))
    assert torch.allclose(block(y), y + (e1 + e2) / 2)


def test_more_stages_iterate_the_corrector():
    torch.manual_seed(0)
    block = HeunBlock(4, 3).eval()
    y = torch.randn(2, 4, 5, 5)
    e1 = block.predictor(y)
    d = (e1 + block.correctors[0](torch.cat([y, e1], 1))) / 2
    d = (e1 + block.correctors[1](torch.cat([y, d], 1))) / 2
    assert torch.allclose(block(y), y + d)


def test_parameter_count():
    # predictor: BN(k) + 1x1 k->k + BN(k) + 3x3 k->k; corrector: BN(2k) + 1x1 2k->k + BN(k) + 3x3 k->k
    k = 8
    predictor = 2 * k + k * k + 2 * k + 9 * k * k
    corrector = 4 * k + 2 * k * k + 2 * k + 9 * k * k
    assert count_params(HeunBlock(k, 2)) == predictor + corrector
