"""Memory-efficient units: same numbers as the plain path, less stored for backward."""

import gc
import weakref

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from rknas import PreActUnit, RKBlock, build_network, concat, count_flops, count_params
from rknas.config import MEMORY_EFFICIENT_MIN_STAGES, NetworkConfig
from rknas.models import blocks
from rknas.models.blocks import set_memory_efficient
from rknas.models.network import RKCNN
from rknas.strategies.base import StageStrategy


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _twins(make_plain, make_eff):
    """A plain module and a memory-efficient one with the same weights and statistics."""
    plain = make_plain().double()
    for m in plain.modules():  # non-trivial BN affine parameters and statistics
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    eff = make_eff().double()
    eff.load_state_dict(plain.state_dict())
    units = [(a, b) for a, b in zip(plain.modules(), eff.modules()) if isinstance(a, PreActUnit)]
    assert units and all(not a.memory_efficient and b.memory_efficient for a, b in units)
    return plain.train(), eff.train()


def _efficient(module):
    set_memory_efficient(module, True)
    return module


def _step(module, x, seed=1):
    """Output, input gradient and parameter gradients of one training-mode forward/backward."""
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    out = module(x)
    out = out[0] if isinstance(out, tuple) else out
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


def _assert_same(plain, eff, x, seed=1):
    out_p, gx_p, g_p = _step(plain, x, seed)
    out_e, gx_e, g_e = _step(eff, x, seed)
    torch.testing.assert_close(out_e, out_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_e, gx_p, rtol=1e-5, atol=1e-5)
    assert g_p.keys() == g_e.keys()
    for name in g_p:
        assert g_p[name] is not None and g_e[name] is not None, name
        torch.testing.assert_close(g_e[name], g_p[name], rtol=1e-5, atol=1e-5, msg=name)
    # Running statistics were updated once, identically (recomputation must not update them again).
    for (name, a), b in zip(plain.named_buffers(), eff.buffers()):
        assert torch.equal(a, b), name
    tracked = [b.item() for n, b in eff.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked and set(tracked) == {1}


@pytest.mark.parametrize("mode", ["E", "I", "R"])
def test_block_outputs_gradients_and_bn_statistics_equal_the_plain_path(mode):
    plain, eff = _twins(lambda: RKBlock(4, 3, mode=mode), lambda: _efficient(RKBlock(4, 3, mode=mode)))
    _assert_same(plain, eff, torch.randn(3, 4, 5, 5, dtype=torch.float64))


def test_network_outputs_gradients_and_bn_statistics_equal_the_plain_path():
    cfg = {"strategy": ["E", "I", "R"], "stages": [2, 3, 2], "k": [4, 6, 4], "steps": [2, 1, 1], "image_size": 8}
    plain, eff = _twins(*(lambda f=f: build_network({**cfg, "memory_efficient": f}) for f in (False, True)))
    _assert_same(plain, eff, torch.randn(4, 3, 8, 8, dtype=torch.float64))


def test_dropout_masks_are_replayed_in_the_recomputation():
    cfg = {"strategy": "I", "stages": 3, "k": 4, "image_size": 8, "dropout": 0.3}
    plain, eff = _twins(*(lambda f=f: build_network({**cfg, "memory_efficient": f}) for f in (False, True)))
    _assert_same(plain, eff, torch.randn(4, 3, 8, 8, dtype=torch.float64), seed=5)


def test_switching_to_eval_between_forward_and_backward_changes_nothing():
    plain, eff = _twins(lambda: RKBlock(4, 3, mode="I", dropout=0.2), lambda: _efficient(RKBlock(4, 3, mode="I", dropout=0.2)))
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    grads = []
    for m in (plain, eff):
        xi = x.clone().requires_grad_()
        torch.manual_seed(3)
        out = m.train()(xi)
        m.eval()  # the recomputation must still use batch statistics and the same dropout mask
        out.sum().backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-5)


def test_recomputes_only_when_training_with_gradients(monkeypatch):
    calls = []
    real = blocks.checkpoint
    monkeypatch.setattr(blocks, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = build_network({"strategy": "I", "stages": 2, "k": 4, "image_size": 8, "memory_efficient": True})
    units = sum(isinstance(m, PreActUnit) for m in model.modules())
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    model(x).sum().backward()
    model.train()
    with torch.no_grad():
        model(x)
    assert calls == []  # eval and no-grad passes keep nothing, so there is nothing to save
    model(x).sum().backward()
    assert len(calls) == units == 4
    set_memory_efficient(model, "auto")  # the default for deep stages: not on the CPU
    model(x).sum().backward()
    assert len(calls) == 4


def test_auto_recomputes_off_the_cpu_only():
    assert blocks.recomputes("auto", torch.device("cuda")) and blocks.recomputes(True, torch.device("cpu"))
    assert not blocks.recomputes("auto", torch.device("cpu")) and not blocks.recomputes(False, torch.device("cuda"))
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        set_memory_efficient(RKBlock(4, 2), "always")


class _Created(TorchDispatchMode):
    """Weak references to every tensor the ops inside create."""

    def __init__(self):
        super().__init__()
        self.refs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.refs += [weakref.ref(t) for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        return out


def _held_after_forward(module, x):
    """Bytes of the tensors a training forward pass leaves alive for backward, in units of ``x``.

    Whatever holds them (autograd, checkpoint inputs, the selective-checkpoint cache), a
    tensor created by the forward pass that is still alive is memory until backward.
    """
    with _Created() as created:
        out = module(x)
    gc.collect()
    storages = {}
    for ref in created.refs:
        t = ref()
        if t is not None:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    del out
    return sum(storages.values()) / (x.numel() * x.element_size())


@pytest.mark.slow
@pytest.mark.parametrize("selective", [True, False])
def test_memory_grows_linearly_not_quadratically_in_the_stages(selective, monkeypatch):
    if not selective:  # torch without selective checkpointing: the region stops before conv3x3
        monkeypatch.setattr(blocks, "SELECTIVE_CHECKPOINTING", False)
    held = {}
    for s in (3, 4, 5):
        plain, eff = RKBlock(16, s, mode="I").train(), _efficient(RKBlock(16, s, mode="I")).train()
        x = torch.randn(4, 16, 8, 8, requires_grad=True)
        held[s] = (_held_after_forward(plain, x), _held_after_forward(eff, x))
    plain_growth = [held[s + 1][0] - held[s][0] for s in (3, 4)]
    eff_growth = [held[s + 1][1] - held[s][1] for s in (3, 4)]
    assert plain_growth[1] > plain_growth[0] + 5  # each stage stores wider concatenations: 26, 32 k-slices
    assert abs(eff_growth[1] - eff_growth[0]) < 0.5  # a fixed 4 per stage: x_i, e_i, two k-wide tensors
    assert held[5][1] < 0.25 * held[5][0]  # measured: 21.4 against 100.4 k-slices


class _CountConvs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func is torch.ops.aten.convolution.default
        return func(*args, **(kwargs or {}))


def test_no_convolution_runs_twice():
    """Recomputation repeats only concatenations, norms and ReLUs, the cheap part of a step."""
    block = _efficient(RKBlock(4, 3, mode="R")).train()
    with _CountConvs() as counter:
        block(torch.randn(2, 4, 5, 5, requires_grad=True)).sum().backward()
    assert counter.n == 2 * 6  # two convolutions in each of the six units, all in the forward pass


def test_without_selective_checkpointing_results_are_the_same(monkeypatch):
    monkeypatch.setattr(blocks, "SELECTIVE_CHECKPOINTING", False)
    plain, eff = _twins(lambda: RKBlock(4, 3, mode="I", dropout=0.2), lambda: _efficient(RKBlock(4, 3, mode="I", dropout=0.2)))
    _assert_same(plain, eff, torch.randn(3, 4, 5, 5, dtype=torch.float64), seed=2)


def test_default_follows_the_stages_and_the_name_does_not_change():
    cfg = NetworkConfig(strategy="I", stages=[2, MEMORY_EFFICIENT_MIN_STAGES, 5], k=4, image_size=16)
    assert [cfg.memory_efficient_in(p) for p in range(3)] == [False, "auto", "auto"]
    model = RKCNN(cfg)
    for p, period in enumerate(model.periods):
        flags = {u.memory_efficient for u in period.modules() if isinstance(u, PreActUnit)}
        assert flags == ({"auto"} if p > 0 else {False})
    for forced in (True, False):
        other = NetworkConfig(strategy="I", stages=[2, 4, 5], k=4, image_size=16, memory_efficient=forced)
        assert all(other.memory_efficient_in(p) is forced for p in range(3))
        assert other.name == cfg.name == "RKCNN-I-2_4_5"


@pytest.mark.parametrize("config", [{"strategy": "I", "stages": [5, 5, 5], "k": 80}, {"strategy": "R", "stages": [2, 4], "k": 8}])
def test_params_and_flops_do_not_change(config):
    plain = build_network({**config, "memory_efficient": False})
    eff = build_network({**config, "memory_efficient": True})
    assert count_params(eff) == count_params(plain)
    assert count_flops(eff) == count_flops(plain)


class _Heun(nn.Module):
    """A third-party style block: public PreActUnits fed pre-concatenated tensors."""

    def __init__(self, k, stages, width, dropout):
        super().__init__()
        self.predictor = PreActUnit(k, k, width, dropout)
        self.corrector = PreActUnit(2 * k, k, width, dropout)

    def forward(self, y):
        e = self.predictor(y)
        return y + 0.5 * (e + self.corrector(concat([y, e])))


def test_units_inside_third_party_blocks_are_switched_on_and_exact():
    strategy = StageStrategy(name="heun", description="test", builder=_Heun, package="test", version="0")

    def make(flag):
        cfg = NetworkConfig(strategy="heun", stages=2, k=4, image_size=8, memory_efficient=flag)
        return lambda: RKCNN(cfg, strategies=[strategy])

    plain, eff = _twins(make(False), make(True))  # the builder switched on the plugin's units
    _assert_same(plain, eff, torch.randn(4, 3, 8, 8, dtype=torch.float64))
