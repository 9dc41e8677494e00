"""Training loop, data splits and augmentation."""

import json

import pytest
import torch
import yaml

from rknas.config import TrainConfig
from rknas.data import DataFacts  # the public name
from rknas.data.core import augment, split
from rknas.data.loaders import digits, digits_facts, fashion_mnist, fashion_mnist_facts, mnist, mnist_facts
from rknas.errors import ConfigError
from rknas.train import lr_factor, recalibrate_bn, train_from_config


def test_split_is_stratified_deterministic_and_disjoint():
    train, _ = digits()
    a1, v1 = split(train, 0.2, seed=1)
    a2, v2 = split(train, 0.2, seed=1)
    assert torch.equal(a1.y, a2.y) and torch.equal(v1.x, v2.x)
    assert len(a1) + len(v1) == len(train)
    counts = torch.bincount(v1.y, minlength=10).float()
    assert counts.min() / counts.max() > 0.8  # every class represented about equally
    sub, _ = split(train, 0.2, seed=1, subset=100)
    assert len(sub) == 100


def test_augment_crop_and_flip():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    flipped = augment(x, crop_pad=0, flip=True, generator=g)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))
    cropped = augment(x, crop_pad=1, generator=torch.Generator().manual_seed(3))
    assert cropped.shape == x.shape
    for i in range(2):  # every crop is a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1))
        assert any(torch.equal(cropped[i], padded[:, dy:dy + 4, dx:dx + 4]) for dy in range(3) for dx in range(3))


def test_lr_schedules():
    cfg = TrainConfig(epochs=4, warmup_epochs=1, schedule="cosine")
    assert lr_factor(cfg, 0, 10) == pytest.approx(0.1)
    assert lr_factor(cfg, 9, 10) == pytest.approx(1.0)
    assert lr_factor(cfg, 25, 10) == pytest.approx(0.5)
    step = TrainConfig(epochs=4, schedule="step")
    assert [lr_factor(step, s, 10) for s in (0, 19, 20, 30)] == pytest.approx([1, 1, 0.1, 0.01])


def test_bn_recalibration_uses_exact_data_statistics():
    bn = torch.nn.BatchNorm2d(3, momentum=0.01)
    model = torch.nn.Sequential(bn)
    x = (torch.rand(64, 3, 4, 4) * 255).to(torch.uint8)
    mean, std = torch.zeros(3), torch.ones(3)
    recalibrate_bn(model, x, mean, std, batch_size=16)
    xf = x.float() / 255
    torch.testing.assert_close(bn.running_mean, xf.mean(dim=(0, 2, 3)))
    assert bn.momentum == 0.01 and not model.training


def test_bn_recalibration_samples_images_at_random_not_the_first_ones():
    """A set sorted by class (an image folder): the first images would be one class only."""
    bn = torch.nn.BatchNorm2d(1, momentum=0.01)
    model = torch.nn.Sequential(bn)
    x = torch.cat([torch.zeros(300, 1, 2, 2), torch.full((300, 1, 2, 2), 255.0)]).to(torch.uint8)  # dark, then bright
    recalibrate_bn(model, x, torch.zeros(1), torch.ones(1), batch_size=50, max_images=200, seed=1)
    assert 0.3 < bn.running_mean.item() < 0.7  # both halves are in the sample (first 200: 0.0)
    again = torch.nn.Sequential(torch.nn.BatchNorm2d(1))
    recalibrate_bn(again, x, torch.zeros(1), torch.ones(1), batch_size=50, max_images=200, seed=1)
    assert again[0].running_mean.item() == bn.running_mean.item()  # the same seed, the same sample


def test_missing_datasets_say_where_and_what(tmp_path):
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.*MNIST/raw"):
        mnist(str(tmp_path))


def test_mnist_idx_format_read(tmp_path):
    import gzip

    import numpy as np

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def idx(path, arr):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        data = header + arr.astype(np.uint8).tobytes()
        path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)

    imgs = np.random.default_rng(0).integers(0, 255, (5, 28, 28))
    idx(raw / "train-images-idx3-ubyte.gz", imgs)
    idx(raw / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4]))
    idx(raw / "t10k-images-idx3-ubyte", imgs[:2])
    idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([5, 6]))
    train, test = mnist(str(tmp_path))
    assert train.x.shape == (5, 1, 28, 28) and torch.equal(train.x[3, 0], torch.from_numpy(imgs[3].astype(np.uint8)))
    assert test.y.tolist() == [5, 6]
    assert mnist_facts(str(tmp_path)) == DataFacts.of(train, test) == DataFacts(5, 2, 1, 28, 10)  # from the headers


def test_described_sets_say_what_loading_gives_and_fail_as_loading_does(tmp_path):
    assert digits_facts(test_fraction=0.3) == DataFacts.of(*digits(test_fraction=0.3))
    with pytest.raises(ConfigError, match="train-images-idx3-ubyte.*MNIST/raw"):
        mnist_facts(str(tmp_path))


def test_cifar_and_svhn_formats(tmp_path, monkeypatch):
    import pickle

    import numpy as np
    import scipy.io

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn

    # torchvision verifies the MD5 sums of the real files; these small stand-ins have others.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", lambda *a, **k: True)
    from rknas.data.loaders import cifar10, svhn

    train, test = cifar10(str(tmp_path))
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (4, 3, 32, 32) and train.classes == 10
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": rng.integers(0, 255, (32, 32, 3, 6), dtype=np.uint8), "y": np.array([[1], [2], [10], [4], [5], [6]])})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": rng.integers(0, 255, (32, 32, 3, 2), dtype=np.uint8), "y": np.array([[10], [3]])})
    tr, te = svhn(str(tmp_path))
    assert tr.x.shape == (6, 3, 32, 32) and te.y.tolist() == [0, 3]  # SVHN's label 10 is digit 0


def _write_idx(folder, n_train, n_test):
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 255, (n_train, 28, 28)), "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 255, (n_test, 28, 28)), "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    for name, arr in arrays.items():
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        (folder / name).write_bytes(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_is_found_without_a_root_in_debians_folder(tmp_path, monkeypatch):
    from rknas.data import loaders

    monkeypatch.setattr(loaders, "FASHION_MNIST_DEBIAN", tmp_path / "debian")
    _write_idx(tmp_path / "debian", 6, 2)  # Debian's package lays the IDX files out flat
    train, test = fashion_mnist()
    assert train.x.shape == (6, 1, 28, 28) and len(test) == 2 and train.y.tolist() == [0, 1, 2, 3, 4, 5]
    assert fashion_mnist_facts() == DataFacts.of(train, test)


def test_fashion_mnist_without_debians_folder_or_a_root_says_what_to_do(tmp_path, monkeypatch):
    from rknas.data import loaders

    monkeypatch.setattr(loaders, "FASHION_MNIST_DEBIAN", tmp_path / "not-installed")
    with pytest.raises(ConfigError, match="Fashion-MNIST not found under .*rknas data download fashion_mnist"):
        fashion_mnist()


def _config(tmp_path, epochs=2):
    cfg = {
        "network": {"strategy": ["E", "I"], "stages": [1, 2], "k": [8, 8], "in_channels": 1, "image_size": 8, "dropout": 0.1},
        "training": {"epochs": epochs, "batch_size": 64, "lr": 0.1, "seed": 7, "flip": False},
        "data": {"name": "digits"},
    }
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.slow
def test_train_resume_after_interruption_gives_the_same_model(tmp_path):
    path = _config(tmp_path, epochs=2)
    full = train_from_config(path, out=tmp_path / "full")

    def stop_after_first(epoch, metrics):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_from_config(path, out=tmp_path / "cut", on_epoch=stop_after_first)
    with pytest.raises(ConfigError, match="pass --resume"):
        train_from_config(path, out=tmp_path / "cut")
    resumed = train_from_config(path, out=tmp_path / "cut", resume=True)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    a = torch.load(tmp_path / "full" / "model.pt")["model"]
    b = torch.load(tmp_path / "cut" / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    m = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert [h["epoch"] for h in m["history"]] == [1, 2] and m["test_images"] == 359


def test_train_rejects_mismatched_data(tmp_path):
    p = _config(tmp_path)
    cfg = yaml.safe_load(p.read_text())
    cfg["network"]["image_size"] = 32
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="expects 1x32x32 inputs, the data set has 1x8x8"):
        train_from_config(p, out=tmp_path / "x")


def test_image_folder(tmp_path):
    from PIL import Image

    from rknas.data.loaders import image_folder

    for split_name in ("train", "test"):
        for cls, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
            d = tmp_path / split_name / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 12), color).save(d / f"{i}.png")
    train, test = image_folder(str(tmp_path), image_size=16)
    assert train.x.shape == (6, 3, 16, 16) and train.classes == 2 and len(test) == 6
    assert train.x[0, 0].float().mean() > 200 and train.x[-1, 2].float().mean() > 200  # cat red, dog blue
    with pytest.raises(ConfigError, match="does not exist"):
        image_folder(str(tmp_path / "none"))


def test_train_config_schema_errors_name_the_key(tmp_path):
    p = _config(tmp_path)
    cfg = yaml.safe_load(p.read_text())
    cfg["training"]["optimizer"] = "rmsprop"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=r"c\.yaml: training: optimizer: input should be 'sgd' or 'adamw', got 'rmsprop'"):
        train_from_config(p, out=tmp_path / "x")
