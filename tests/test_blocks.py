"""Block semantics: the RK block computes what Eqs 17, 27 and 28 say, not just the right shapes."""

import pytest
import torch

from rknas import PreActUnit, RKBlock, build_network
from rknas.models.blocks import concat


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomise_bn(module):
    # Non-trivial BN affine/statistics so that mistakes in wiring cannot cancel out.
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)


def _block(mode, k=4, s=3):
    b = RKBlock(k, s, mode=mode)
    _randomise_bn(b)
    return b.eval()


def _phase1(block, y):
    xs = []
    for unit in block.phase1:
        xs.append(unit(concat([y, *xs])))
    return xs


@torch.no_grad()
@pytest.mark.parametrize("s", [1, 2, 4])
def test_E_is_y_plus_sum_of_dense_growths(s):
    b = _block("E", s=s)
    y = torch.randn(2, 4, 5, 5)
    xs = _phase1(b, y)
    assert len(xs) == s
    torch.testing.assert_close(b(y), y + sum(xs))


@torch.no_grad()
def test_R_uses_phase1_values_eq27():
    b = _block("R")
    y = torch.randn(2, 4, 5, 5)
    x1, x2, x3 = _phase1(b, y)
    u1, u2, u3 = b.phase2
    e1 = u1(torch.cat([y, x2, x3], 1))
    e2 = u2(torch.cat([y, x1, x3], 1))
    e3 = u3(torch.cat([y, x1, x2], 1))
    torch.testing.assert_close(b(y), y + e1 + e2 + e3)


@torch.no_grad()
def test_I_replaces_earlier_stages_eq28():
    b = _block("I")
    y = torch.randn(2, 4, 5, 5)
    x1, x2, x3 = _phase1(b, y)
    u1, u2, u3 = b.phase2
    e1 = u1(torch.cat([y, x2, x3], 1))
    e2 = u2(torch.cat([y, e1, x3], 1))
    e3 = u3(torch.cat([y, e1, e2], 1))
    torch.testing.assert_close(b(y), y + e1 + e2 + e3)


@torch.no_grad()
def test_I_and_R_differ_exactly_by_the_replacement():
    """Same weights; Phase-II unit 2 sees only its stage-1 slot. Then I - R = u2(e1) - u2(x1)."""
    k = 4
    r = _block("R", k=k, s=2)
    i = _block("I", k=k, s=2)
    i.load_state_dict(r.state_dict())
    # Zero the 1x1 weights reading y_n (first k input channels) of Phase-II unit 2.
    for blk in (r, i):
        blk.phase2[1].conv1.weight[:, :k] = 0
    y = torch.randn(3, k, 6, 6)
    x1, x2 = _phase1(r, y)
    e1 = r.phase2[0](torch.cat([y, x2], 1))
    u2 = r.phase2[1]
    # u2 now depends only on its stage slot; BN of the y slot feeds zero weights.
    expected = u2(torch.cat([torch.randn_like(y), e1], 1)) - u2(torch.cat([torch.randn_like(y), x1], 1))
    torch.testing.assert_close(i(y) - r(y), expected, rtol=1e-5, atol=1e-5)
    assert (i(y) - r(y)).abs().max() > 1e-3  # the replacement matters


@pytest.mark.parametrize("mode", ["E", "I", "R"])
def test_gradients_reach_every_parameter(mode):
    model = build_network({"strategy": mode, "stages": [2, 3], "k": [4, 6], "steps": [2, 1], "image_size": 8, "dropout": 0.1})
    model.train()
    loss = model(torch.randn(4, 3, 8, 8)).logsumexp(1).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_train_and_eval_modes():
    model = build_network({"strategy": "I", "stages": 2, "k": 4, "image_size": 8, "dropout": 0.3})
    x = torch.randn(4, 3, 8, 8)
    model.eval()
    stats = [b.clone() for b in model.buffers()]
    with torch.no_grad():
        a, b = model(x), model(x)
    torch.testing.assert_close(a, b)  # deterministic in eval
    assert all(torch.equal(s, t) for s, t in zip(stats, model.buffers()))  # BN stats untouched
    model.train()
    with torch.no_grad():
        c, d = model(x), model(x)
    assert not torch.allclose(c, d)  # dropout active in train
    assert any(not torch.equal(s, t) for s, t in zip(stats, model.buffers()))  # BN stats updated


def test_steps_have_separate_weights_and_compose():
    model = build_network({"strategy": "E", "stages": 2, "k": 4, "steps": 3, "image_size": 8})
    blocks = model.periods[0].blocks
    assert len(blocks) == 3
    assert blocks[0].phase1[0].conv1.weight.data_ptr() != blocks[1].phase1[0].conv1.weight.data_ptr()
    model.eval()
    y = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        out, _ = model.periods[0](y)
        torch.testing.assert_close(out, blocks[2](blocks[1](blocks[0](y))))


def test_unit_structure_and_width():
    u = PreActUnit(12, 4, width=2.0, dropout=0.1)
    names = [n for n, _ in u.named_children()]
    assert names == ["norm1", "relu1", "conv1", "drop1", "norm2", "relu2", "conv2", "drop2"]
    assert u.conv1.out_channels == 8 and u.conv2.out_channels == 4
    assert u.conv1.bias is None and u.conv2.bias is None


def test_I_and_R_need_two_stages():
    with pytest.raises(ValueError):
        RKBlock(4, 1, mode="I")
