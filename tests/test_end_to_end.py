"""A user's whole path on real files, through the command line: a search that starts from a paper
model given as --start-from, then `rknas evaluate` of its finalists beside that model.

The data are small files in MNIST's exact IDX format (written here), so the paper's MNIST
models fit them; the search runs on the shared local Ray.
"""

import json

import numpy as np
import optuna
import pytest
import yaml

from rknas.storage import TrialRecord

pytestmark = pytest.mark.slow

PAPER_MODEL = "rkcnn_e_2_mnist_k24"


def write_mnist(root, n_train=240, n_test=60):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ys = {"train": rng.integers(0, 10, n_train), "t10k": rng.integers(0, 10, n_test)}
    for split, n in (("train", n_train), ("t10k", n_test)):
        # class-dependent brightness: learnable in one epoch, so accuracies are not all equal
        imgs = (rng.integers(0, 60, (n, 28, 28)) + 19 * ys[split][:, None, None]).astype(np.uint8)
        for kind, arr in (("images-idx3", imgs), ("labels-idx1", ys[split].astype(np.uint8))):
            header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
            (raw / f"{split}-{kind}-ubyte").write_bytes(header + arr.tobytes())


def test_search_with_start_from_then_evaluate(ray_local, cli, tmp_path):
    write_mnist(tmp_path / "data")
    space = {
        "name": "mini_mnist", "data": {"name": "mnist", "val_fraction": 0.25}, "framework": "mnist",
        "architecture": {"periods": 1, "strategy": ["E", "I"], "stages": {"low": 1, "high": 2}, "k": [12, 24], "attention": False, "multiscale": False},
        "training": {"lr": 0.1, "batch_size": 30, "warmup_epochs": 0},
        "fidelity": {"epochs": 1, "early_stopping": False},
    }
    space_file = tmp_path / "mini_mnist.yaml"
    space_file.write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path}/e2e.db"
    code, out, err = cli("search", "--space", space_file, "--trials", "3", "--storage", url, "--concurrency", "1",
                         "--data-root", tmp_path / "data", "--start-from", PAPER_MODEL)
    assert code == 0, err
    study = optuna.load_study(study_name="mini_mnist", storage=url)
    first = TrialRecord.of(study.trials[0])
    assert first.network["k"] == [24] and first.network["stages"] == [2] and first.network["strategy"] == ["E"]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3

    out_dir = tmp_path / "eval"
    code, out, err = cli("evaluate", "--study", "mini_mnist", "--storage", url, "--top", "2", "--seeds", "2",
                         "--epochs", "1", "--include", PAPER_MODEL, "--data-root", tmp_path / "data", "--out", out_dir)
    assert code == 0, err
    result = json.loads((out_dir / "evaluation.json").read_text())
    names = [m["name"] for m in result["models"]]
    assert len(names) == 3 and names[-1] == PAPER_MODEL and result["data"]["test_images"] == 60
    for m in result["models"]:
        assert len(m["test_accuracy"]) == 2 and all(round(a * 60) == pytest.approx(a * 60) for a in m["test_accuracy"])
    # The study keeps the summary, and `best --by evaluation` exports the best evaluated trial.
    code, _, err = cli("best", "--study", "mini_mnist", "--storage", url, "--by", "evaluation", "-o", tmp_path / "b.yaml")
    assert code == 0, err
    exported = yaml.safe_load((tmp_path / "b.yaml").read_text())
    trials = [m for m in result["models"] if m["source"] == "trial"]
    assert exported["provenance"]["trial"] == max(trials, key=lambda m: (m["mean"], -m["std"], -m["trial"]))["trial"]
