"""fit: precisions and memory formats, host reads per epoch, divergence, checkpoints."""

import pytest
import torch
from torch import nn

from rknas import train as train_mod
from rknas.config import NetworkConfig, TrainConfig
from rknas.data.core import TensorData
from rknas.models.network import build_network
from rknas.train import evaluate, fit, resolve_channels_last, resolve_precision

NET = NetworkConfig(strategy="I", stages=2, k=8, in_channels=1, image_size=8, classes=4)


def _toy(n: int = 256, seed: int = 0) -> TensorData:
    """Four classes: which quadrant of a noisy 8x8 image is bright."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, 8, 8, generator=g) * 100
    for q, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == q, :, r : r + 4, c : c + 4] += 120
    return TensorData(x.to(torch.uint8), y, 4)


def test_auto_settings():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"
    assert resolve_channels_last(None, "cpu") is False
    assert resolve_channels_last(None, torch.device("cuda")) is True  # resolved without a GPU
    assert resolve_channels_last(True, "cpu") is True


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16", "fp16"])
def test_every_precision_trains_on_cpu(precision, channels_last):
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.1, precision=precision, channels_last=channels_last, seed=1)
    train, val = _toy(256), _toy(128, seed=1)
    model, history, (mean, std) = fit(NET, cfg, train, val)
    losses = [h["train_loss"] for h in history]
    assert all(isinstance(v, float) and v == v for v in losses)
    assert losses[-1] < losses[0] - 0.1, losses
    assert history[-1]["val_accuracy"] > 0.5  # chance is 0.25
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves weights fp32
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1 and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    # evaluate under the training precision agrees with fp32 evaluation
    same = evaluate(model, val, mean, std, precision=precision, channels_last=channels_last)
    full = evaluate(model, val, mean, std)
    assert abs(same["accuracy"] - full["accuracy"]) <= 0.05


class _Countdown(nn.Module):
    """Logits that turn NaN from forward call ``bad`` on (counts its calls)."""

    def __init__(self, bad: int):
        super().__init__()
        self.fc = nn.Linear(64, 4)
        self.bad, self.calls = bad, 0

    def forward(self, x):
        self.calls += 1 if self.training else 0
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.training and self.calls >= self.bad else out


def test_divergence_is_caught_at_the_next_check(monkeypatch):
    monkeypatch.setattr(train_mod, "DIVERGENCE_CHECK_STEPS", 3)
    model = _Countdown(bad=5)
    cfg = TrainConfig(epochs=2, batch_size=16, bn_recalibrate=False)  # 16 steps per epoch
    with pytest.raises(FloatingPointError, match=r"training diverged at epoch 1 .*after step 6\); lower the learning rate"):
        fit(NET, cfg, _toy(256), model=model)
    assert model.calls == 6  # NaN at step 5, seen by the check after step 6, no further steps


def test_host_reads_once_per_check_not_per_step(monkeypatch):
    """Reading a device value back (item, tolist, bool) would stall a GPU every step."""
    model = build_network(NET)  # built first: its contract check reads values back, once
    reads = []
    for name in ("item", "tolist", "__bool__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _r=real, _n=name: reads.append(_n) or _r(self, *a))
    monkeypatch.setattr(train_mod, "DIVERGENCE_CHECK_STEPS", 5)
    cfg = TrainConfig(epochs=1, batch_size=16, bn_recalibrate=False)  # 16 steps: checks after 5, 10, 15, 16
    _, history, _ = fit(NET, cfg, _toy(256), model=model)
    assert len(history) == 1
    assert reads.count("item") == 4 and reads.count("tolist") == 1 and len(reads) == 5, reads


def test_checkpoint_loads_weights_only_and_resumes_to_the_same_weights(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, crop_pad=1, flip=True, seed=3, precision="bf16")
    net = NET.model_copy(update={"dropout": 0.2})  # dropout and augmentation use every saved RNG
    train = _toy(192)
    full, full_hist, _ = fit(net, cfg, train, checkpoint=tmp_path / "full.pt")

    def stop(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(net, cfg, train, checkpoint=ckpt, on_epoch=stop)
    state = torch.load(ckpt, weights_only=True)  # no pickled objects beyond tensors and plain values
    assert state["epoch"] == 2 and len(state["history"]) == 2
    resumed, hist, _ = fit(net, cfg, train, checkpoint=ckpt, resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda h: [{k: v for k, v in e.items() if k != "epoch_time"} for e in h]  # noqa: E731
    assert strip(hist) == strip(full_hist)


class _Evil:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("content", ["evil", "truncated", "other keys"])
def test_a_crafted_or_broken_checkpoint_is_refused_and_nothing_in_it_runs(tmp_path, content):
    from rknas.errors import ConfigError

    marker, ckpt = tmp_path / "PWNED", tmp_path / "checkpoint.pt"
    if content == "evil":
        torch.save({"model": _Evil(marker)}, ckpt)
    elif content == "truncated":
        fit(NET, TrainConfig(epochs=1, batch_size=32), _toy(64), checkpoint=ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:500])
    else:
        torch.save({"weights": torch.zeros(1)}, ckpt)
    with pytest.raises(ConfigError, match="is not a checkpoint of this run written by `rknas train`.*nothing in it was run"):
        fit(NET, TrainConfig(epochs=2, batch_size=32), _toy(64), checkpoint=ckpt, resume=True)
    assert not marker.exists()
