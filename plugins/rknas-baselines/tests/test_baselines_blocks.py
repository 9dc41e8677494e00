"""What the blocks compute: solver formulas, residual and dense/clique wiring, gradients."""

import warnings

import pytest
import torch
from torch import nn

import rknas
from rknas import PluginError, build_network
from rknas.models.network import build_stage
from rknas_baselines import ode, plugin
from rknas_baselines.dense import CliqueBlock, DenseBlock
from rknas_baselines.ode import ODEBlock
from rknas_baselines.plugin import STRATEGIES

# Some rows use the ``_gn`` names of earlier releases: deprecated aliases of the same models (their
# warning is tested in test_baselines_spec.py).
pytestmark = pytest.mark.filterwarnings("ignore:stage strategy '.*_gn' is deprecated:DeprecationWarning")

K = 8


def block(name, s, k=K):
    """A block built and contract-checked by rknas, in eval mode (deterministic norms)."""
    torch.manual_seed(0)
    return build_stage(rknas.get_strategy(name), k, s, 1.0, 0.0).eval()


def y0(k=K):
    torch.manual_seed(1)
    return torch.randn(2, k, 5, 5, dtype=torch.float64)


@pytest.fixture(autouse=True)
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_all_strategies_are_registered_with_the_package():
    found = {s.name: s for s in rknas.list_strategies()}
    for s in STRATEGIES:
        assert found[s.name].package == "rknas-baselines" and found[s.name].version


@pytest.mark.parametrize("name", [s.name for s in STRATEGIES])
def test_every_strategy_builds_trains_and_reaches_every_parameter(name):
    st = rknas.get_strategy(name)
    s = max(st.min_stages, 2)
    torch.manual_seed(0)
    model = build_network({"strategy": [name, name], "stages": s, "k": 4, "image_size": 8})
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the implicit solver may warn that it did not converge
        out = model(torch.randn(3, 3, 8, 8))
    assert out.shape == (3, 10)
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in model.named_parameters() if "periods" in n and p.grad.abs().sum() == 0]
    assert not zero


def test_gn_variants_use_groupnorm_and_plain_ones_batchnorm():
    assert any(isinstance(m, nn.GroupNorm) for m in block("rknet_gn", 1).modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in block("preact_gn", 1).modules())
    bns = [m for m in block("preact", 1).modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 for m in bns)


def test_preact_is_y_plus_residual():
    b = block("preact", 2)
    y = y0()
    first, second = b[0], b[1]
    manual = y + first.residual(y)
    manual = manual + second.residual(manual)
    assert torch.allclose(b(y), manual)
    convs = [m for m in first.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.bias) for c in convs] == [
        (K, K, (3, 3), None), (K, K, (3, 3), None)]


def test_bottleneck_shapes():
    convs = [m for m in block("preact_bottleneck", 1, k=16).modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [(16, 4, 1), (4, 4, 3), (4, 16, 1)]


def test_ode_function_structure():
    f = block("rknet", 1).func
    assert (f.conv1.in_channels, f.conv2.in_channels) == (K + 1, K + 1)
    assert f.conv1.bias is not None and f.conv2.bias is not None
    y = y0()
    manual = f.norm1(y).relu()
    manual = f.conv1(torch.cat([torch.full_like(manual[:, :1], 0.25), manual], 1))
    manual = f.norm2(manual).relu()
    manual = f.norm3(f.conv2(torch.cat([torch.full_like(manual[:, :1], 0.25), manual], 1)))
    assert torch.allclose(f(torch.tensor(0.25), y), manual)
    assert not torch.allclose(f(torch.tensor(0.0), y), f(torch.tensor(1.0), y))  # time matters
    g = block("rknn", 1).func
    assert g.conv1.in_channels == K and torch.equal(g(torch.tensor(0.0), y), g(torch.tensor(0.7), y))


@pytest.mark.parametrize("name", ["rknn", "rknet_gn"])
def test_rk_models_are_one_classical_rk4_step(name):
    b = block(name, 1)
    f, y = b.func, y0()
    t = torch.tensor
    k1 = f(t(0.0), y)
    k2 = f(t(0.5), y + 0.5 * k1)
    k3 = f(t(0.5), y + 0.5 * k2)
    k4 = f(t(1.0), y + k3)
    out = b(y)
    assert b.nfe == 4
    assert torch.allclose(out, y + (k1 + 2 * k2 + 2 * k3 + k4) / 6)


def test_rk_models_with_s_steps_take_s_steps():
    b = block("rknn", 3)
    b(y0())
    assert b.nfe == 12


def _rk38(f, t0, h, y):
    k1 = f(torch.tensor(t0), y)
    k2 = f(torch.tensor(t0 + h / 3), y + h * k1 / 3)
    k3 = f(torch.tensor(t0 + 2 * h / 3), y + h * (k2 - k1 / 3))
    k4 = f(torch.tensor(t0 + h), y + h * (k1 - k2 + k3))
    return y + h * (k1 + 3 * k2 + 3 * k3 + k4) / 8, k1


def test_odenet_is_adams_bashforth_with_a_38_rule_starter():
    b = block("odenet", 4)
    f, y, h = b.func, y0(), 0.25
    y1, f0 = _rk38(f, 0.0, h, y)
    y2, f1 = _rk38(f, h, h, y1)
    f2 = f(torch.tensor(2 * h), y2)
    y3 = y2 + h * (23 * f2 - 16 * f1 + 5 * f0) / 12  # third step: 3-step AB
    f3 = f(torch.tensor(3 * h), y3)
    y4 = y3 + h * (55 * f3 - 59 * f2 + 37 * f1 - 9 * f0) / 24  # fourth: 4th-order AB
    assert torch.allclose(b(y), y4)
    assert b.nfe == 4 + 4 + 1 + 1


def test_odenet_with_the_papers_two_steps_is_the_starter_twice():
    b = block("odenet_gn", 2)
    y = y0()
    y1, _ = _rk38(b.func, 0.0, 0.5, y)
    y2, _ = _rk38(b.func, 0.5, 0.5, y1)
    assert torch.allclose(b(y), y2) and b.nfe == 8


def test_implicit_odenet_corrects_the_prediction():
    implicit, explicit = block("odenet_implicit", 4), block("odenet", 4)
    explicit.load_state_dict(implicit.state_dict())
    y = y0()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = implicit(y)
    assert 8 + 2 * 2 <= implicit.nfe <= 8 + 2 * (1 + 4)  # f(t_n) and 1..4 corrector iterations per Adams step
    assert implicit.method == "implicit_adams" and implicit.tol == 0.9
    assert block("odenet_implicit_gn", 3).tol == 0.5
    assert not torch.allclose(out, explicit(y))


def test_implicit_odenet_needs_three_steps():
    with pytest.raises(rknas.ConfigError, match="needs stages >= 3"):
        build_network({"framework": "mnist", "strategy": "odenet_implicit_gn", "stages": 2, "k": 8})


def test_dense_block_passes_input_and_features_on():
    b = block("densenet", 3)
    assert isinstance(b, DenseBlock)
    y = y0()
    out = b(y)
    assert out.shape == (2, 4 * K, 5, 5) and torch.equal(out[:, :K], y)
    x1 = b.units[0](y)
    x2 = b.units[1](torch.cat([y, x1], 1))
    x3 = b.units[2](torch.cat([y, x1, x2], 1))
    assert torch.allclose(out, torch.cat([y, x1, x2, x3], 1))


def test_clique_block_updates_alternately_with_shared_weights():
    b = block("cliquenet", 3)
    assert isinstance(b, CliqueBlock)
    y = y0()
    to_next, to_post = b(y)
    assert to_next.shape == (2, 3 * K, 5, 5) and to_post.shape == (2, 4 * K, 5, 5)
    assert torch.equal(to_post[:, :K], y) and torch.equal(to_post[:, K:], to_next)
    u = b.stage1
    x1 = u[0](y)
    x2 = u[1](torch.cat([y, x1], 1))
    x3 = u[2](torch.cat([y, x1, x2], 1))

    def stage2(i, inputs, weight):
        h = nn.functional.conv2d(b.stage2_norm_in[i](torch.cat(inputs, 1)).relu(), weight)
        return u[i].conv2(b.stage2_norm_mid[i](h).relu())  # layer i's own 3x3 conv

    w = b.backward_weights
    # the 1x1 kernel slice from layer j to layer i is the same tensor in both stages
    x1n = stage2(0, [x2, x3], w[0])
    x2n = stage2(1, [x1n, x3], torch.cat([u[1].conv1.weight[:, K:], w[1]], 1))
    x3n = stage2(2, [x1n, x2n], u[2].conv1.weight[:, K:])
    assert torch.allclose(to_next, torch.cat([x1n, x2n, x3n], 1))
    assert [tuple(p.shape) for p in w] == [(K, 2 * K, 1, 1), (K, K, 1, 1)]


def test_width_changing_blocks_cannot_repeat_in_a_period():
    with pytest.raises(rknas.ConfigError, match="only 1 time step"):
        build_network({"strategy": "densenet", "stages": 2, "k": 4, "steps": 2, "image_size": 8})
    with pytest.raises(rknas.ConfigError, match="needs stages >= 2"):
        build_network({"strategy": "cliquenet", "stages": 1, "k": 4, "image_size": 8})


def test_transition_and_postprocessor_widths():
    model = build_network({"strategy": "cliquenet", "stages": [2, 3], "k": [4, 6], "image_size": 8})
    assert model.transitions[0].conv.in_channels == 2 * 4  # generated features only
    assert [n.num_features for n in model.post_norms] == [3 * 4, 4 * 6]  # input + features
    model = build_network({"strategy": "densenet", "stages": [2, 3], "k": [4, 6], "image_size": 8})
    assert model.transitions[0].conv.in_channels == 3 * 4
    assert [n.num_features for n in model.post_norms] == [3 * 4, 4 * 6]


def test_dropout_follows_every_conv():
    st = rknas.get_strategy("rknet")
    b = build_stage(st, 4, 1, 1.0, 0.2)
    assert isinstance(b.func.drop, nn.Dropout)
    b = build_stage(rknas.get_strategy("preact"), 4, 1, 1.0, 0.2)
    assert sum(isinstance(m, nn.Dropout) for m in b.modules()) == 2


def test_broken_solver_is_reported_by_strategy_and_package(monkeypatch):
    monkeypatch.setattr(ODEBlock, "forward", lambda self, y: y.detach())
    with pytest.raises(PluginError, match="'rknn' from rknas-baselines .*gradient"):
        build_network({"strategy": "rknn", "stages": 1, "k": 4, "image_size": 8})


def test_the_plugin_names_the_ode_modules_method_without_importing_it():
    assert plugin.CLASSIC == ode.CLASSIC  # the entry point keeps torch out, so it repeats the name
