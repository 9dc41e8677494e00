"""load_model and `rknas export`, on a model trained by rknas's own training code."""

import json
import os
import pickle
import re

import pytest
import torch
import yaml

from rknas.data.core import to_float
from rknas.data.loaders import digits
from rknas.errors import RknasError
from rknas.export import Normalize, export_model, load_model
from rknas.models.network import build_network


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder written by train_from_config: 1 epoch on digits."""
    from rknas.train import train_from_config

    folder = tmp_path_factory.mktemp("export")
    cfg = {
        "network": {"strategy": ["E", "I"], "stages": [1, 2], "k": [8, 8], "in_channels": 1, "image_size": 8, "dropout": 0.1},
        "training": {"epochs": 1, "batch_size": 64, "lr": 0.1, "seed": 3},
        "data": {"name": "digits"},
    }
    (folder / "c.yaml").write_text(yaml.safe_dump(cfg))
    train_from_config(folder / "c.yaml", out=folder / "run", device="cpu")
    return folder / "run"


def test_load_model_predicts_what_evaluation_measured(run):
    model = load_model(run / "model.pt")
    assert not any(m.training for m in model.modules())
    saved = torch.load(run / "model.pt", weights_only=True)
    assert isinstance(model[0], Normalize) and torch.equal(model[0].mean.flatten(), saved["mean"])
    _, test = digits()
    network = build_network(saved["network"])
    network.load_state_dict(saved["model"])
    with torch.no_grad():
        logits = model(test.x.float() / 255)
        reference = network.eval()(to_float(test.x, saved["mean"], saved["std"]))
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-5)
    accuracy = (logits.argmax(1) == test.y).float().mean().item()
    assert accuracy == pytest.approx(json.loads((run / "metrics.json").read_text())["test_accuracy"])
    assert accuracy > 0.15  # trained, not chance (0.1)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_files_run_and_match_pytorch(run, tmp_path, cli, fmt):
    out = tmp_path / "sub" / f"model.{fmt}"
    code, stdout, err = cli("export", run / "model.pt", "--format", fmt, "-o", out)
    assert code == 0, err
    reported = float(re.search(r"max abs difference from PyTorch on a random batch: (\S+)", stdout).group(1))
    assert reported <= 1e-4 and f"Wrote {out}" in stdout and "batchx1x8x8" in stdout
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary or side files
    _, test = digits()
    x = test.x[:5].float() / 255  # another batch size than the export's own check
    with torch.no_grad():
        expected = load_model(run / "model.pt")(x)
        if fmt == "onnx":
            import onnxruntime

            session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        else:
            got = torch.jit.load(str(out))(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


class RunsCode:
    """Unpickling this would create a folder: the proof that code in a file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_files_that_are_not_a_model_pt_are_refused_in_one_line(run, tmp_path):
    good = (run / "model.pt").read_bytes()
    saved = torch.load(run / "model.pt", weights_only=True)
    marker = tmp_path / "code-ran"
    files = {
        "text.pt": b"not a torch file",
        "truncated.pt": good[: len(good) // 2],
        "pickled-code.pt": pickle.dumps({"model": RunsCode(marker)}, protocol=2),
        "empty.pt": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"model": RunsCode(marker), "network": {}, "mean": 0, "std": 1}, tmp_path / "torch-code.pt")
    torch.save({"model": saved["model"]}, tmp_path / "weights-only.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    wrong = dict(saved, network=dict(saved["network"], k=[16, 16]))
    torch.save(wrong, tmp_path / "other-network.pt")
    expected = {
        "text.pt": "not a complete torch file",
        "truncated.pt": "not a complete torch file",
        "empty.pt": "not a complete torch file",
        "pickled-code.pt": "objects other than tensors and plain data",
        "torch-code.pt": "objects other than tensors and plain data",
        "weights-only.pt": "missing network, mean, std",
        "list.pt": "holds a list",
        "other-network.pt": "the weights do not fit the stored network config",
        "missing.pt": "no such file",
    }
    for name, text in expected.items():
        with pytest.raises(RknasError) as err:
            load_model(tmp_path / name)
        assert text in str(err.value) and "\n" not in str(err.value), (name, str(err.value))
    with pytest.raises(RknasError, match="is a training checkpoint; load model.pt"):
        load_model(run / "checkpoint.pt")
    assert not marker.exists()


def test_cli_bad_input_is_one_line_exit_2(run, tmp_path, cli):
    (tmp_path / "notes.txt").write_text("hello")
    cases = [
        (("export", tmp_path / "notes.txt", "--format", "torchscript", "-o", tmp_path / "m.pt"), "is not a model.pt"),
        (("export", run / "model.pt", "--format", "tflite", "-o", tmp_path / "m.pt"), "unknown export format 'tflite'"),
    ]
    for args, text in cases:
        code, _, err = cli(*args)
        assert code == 2 and text in err and err.count("\n") == 1, err
    assert not (tmp_path / "m.pt").exists()


def test_missing_onnx_packages_name_the_extra(run, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(RknasError, match=r"ONNX export needs onnxruntime: pip install 'rknas\[export\]'"):
        export_model(run / "model.pt", "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
