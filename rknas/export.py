"""Trained models for inference: load a ``model.pt`` and export it to ONNX or TorchScript.

A ``model.pt`` from ``rknas train`` holds the weights, the network and training configs and
the training set's per-channel mean and std. The model built here puts that normalisation in
front of the network, so callers (and the exported files) take images scaled to [0, 1]
and never need the statistics themselves.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from importlib import import_module
from pathlib import Path
from typing import Union

import torch
from torch import nn

from rknas.errors import RknasError
from rknas.models.network import build_network, parse_network_config

FORMATS = ("onnx", "torchscript")
REQUIRED_KEYS = ("model", "network", "mean", "std")
NOT_A_MODEL = "is not a model.pt written by `rknas train`"


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with the training set's statistics as buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().float().reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std.detach().float().reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read(path: Path) -> dict:
    """The checked contents of a model.pt; tensors and plain data only, so nothing in it runs."""
    import pickle

    if not path.is_file():
        raise RknasError(f"{path}: no such file (expected RUN/model.pt written by `rknas train`)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines()]
        code = next((line for line in lines if "GLOBAL" in line), None)
        if code:  # torch refused to import a function or class named in the file
            raise RknasError(
                f"{path} {NOT_A_MODEL}: it holds objects other than tensors and plain data, so it was not loaded ({code})"
            ) from None
        detail = next((line for line in lines if line.startswith("Unsupported")), "") or _one_line(exc)
        raise RknasError(f"{path} {NOT_A_MODEL}: not a complete torch file ({detail})") from None
    except Exception as exc:  # not a torch file, truncated, unreadable
        raise RknasError(f"{path} {NOT_A_MODEL}: not a complete torch file ({_one_line(exc)})") from None
    if not isinstance(obj, dict):
        raise RknasError(f"{path} {NOT_A_MODEL}: it holds a {type(obj).__name__}, not the expected dict")
    if "optimizer" in obj and "network" not in obj:
        raise RknasError(f"{path} is a training checkpoint; load model.pt from the same run folder")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise RknasError(f"{path} {NOT_A_MODEL}: missing {', '.join(missing)} (it has {', '.join(map(str, obj)) or 'nothing'})")
    kinds = {"model": dict, "network": dict, "mean": torch.Tensor, "std": torch.Tensor}
    for key, kind in kinds.items():
        if not isinstance(obj[key], kind):
            raise RknasError(f"{path} {NOT_A_MODEL}: {key!r} is a {type(obj[key]).__name__}, expected a {kind.__name__}")
    return obj


def _load(path: Union[str, Path]) -> tuple[nn.Module, tuple[int, int, int]]:
    """The inference model and its input shape (C, H, W)."""
    path = Path(path)
    obj = _read(path)
    try:
        config = parse_network_config(obj["network"])
        network = build_network(config)
    except RknasError as exc:  # e.g. a strategy whose plugin is not installed here
        raise type(exc)(f"{path}: {exc}") from None
    try:
        network.load_state_dict(obj["model"])
    except RuntimeError as exc:
        raise RknasError(f"{path}: the weights do not fit the stored network config ({_one_line(exc)[:300]})") from None
    mean, std = obj["mean"], obj["std"]
    if mean.numel() != config.in_channels or std.numel() != config.in_channels:
        raise RknasError(f"{path}: mean/std have {mean.numel()}/{std.numel()} channels, the network takes {config.in_channels}")
    model = nn.Sequential(OrderedDict(normalize=Normalize(mean, std), network=network))
    model.eval()
    assert config.in_channels is not None and config.image_size is not None  # filled in by NetworkConfig
    return model, (config.in_channels, config.image_size, config.image_size)


def load_model(path: Union[str, Path]) -> nn.Module:
    """The network trained by ``rknas train``, ready for inference.

    The training set's normalisation is the first layer, so the input is the image scaled to
    [0, 1]: float (N, C, H, W), e.g. ``uint8_images / 255``. The output is the logits (N,
    classes). The model is in eval mode. The file is read with ``weights_only=True``, so a
    file holding anything but tensors and plain data is refused before anything in it runs.

    Args:
        path: ``RUN/model.pt`` as written by ``rknas train``.

    Returns:
        ``nn.Sequential(normalize, network)`` on the CPU, in eval mode.

    Raises:
        RknasError: The file is missing, not a torch file, truncated, holds code or other
            objects, lacks a key of model.pt, or its weights do not fit its network config.
        ConfigError: Its network config is invalid or names a strategy not installed here.
    """
    return _load(path)[0]


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxruntime", "onnxscript"):
        try:
            import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise RknasError(f"ONNX export needs {', '.join(missing)}: pip install 'rknas[export]'")


def _export_onnx(model: nn.Module, example: torch.Tensor, dest: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(dest), dynamo=True, external_data=False, verbose=False,
            input_names=["image"], output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
        )


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _export_torchscript(model: nn.Module, example: torch.Tensor, dest: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream, still supported
        traced = torch.jit.trace(model, (example,))
        traced.save(str(dest))


def _run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")(x)


def export_model(model_pt: Union[str, Path], fmt: str, out: Union[str, Path], tolerance: float = 1e-4) -> dict:
    """Export a trained model to ONNX or TorchScript, checked against PyTorch.

    The exported file takes what ``load_model`` takes (images scaled to [0, 1], float
    (N, C, H, W), any batch size) and returns the logits. Before the file is written its
    outputs on a random batch (of another size than the one used to export) are compared
    with PyTorch's: onnxruntime runs the ONNX file, ``torch.jit.load`` the TorchScript one.

    Args:
        model_pt: ``RUN/model.pt`` written by ``rknas train``.
        fmt: ``onnx`` (needs ``pip install 'rknas[export]'``) or ``torchscript``.
        out: The file to write; its folder is created if needed.
        tolerance: Largest accepted difference, relative to the largest logit (at least 1).

    Returns:
        ``format``, ``path``, ``bytes``, ``input_shape`` (["batch", C, H, W]) and
        ``max_abs_diff``: the largest absolute difference from PyTorch's logits.

    Raises:
        RknasError: Unknown format, missing ONNX packages, a file that is not a model.pt
            (see ``load_model``), an export that fails or differs from PyTorch (nothing is
            written then).
    """
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise RknasError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx()
    model, shape = _load(model_pt)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    g = torch.Generator().manual_seed(0)
    example, check = torch.rand((2, *shape), generator=g), torch.rand((3, *shape), generator=g)
    export, run = (_export_onnx, _run_onnx) if fmt == "onnx" else (_export_torchscript, _run_torchscript)
    try:
        with torch.no_grad():
            try:
                export(model, example, tmp)
            except Exception as exc:
                raise RknasError(f"{fmt} export of {model_pt} failed: {_one_line(exc)[:500]}") from None
            expected = model(check)
            got = run(tmp, check)
        diff = (got - expected).abs().max().item()
        allowed = tolerance * max(1.0, expected.abs().max().item())
        if not diff <= allowed:  # also catches NaN
            raise RknasError(f"the {fmt} export differs from PyTorch by {diff:.3g} (more than {allowed:.3g}); nothing written")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"format": fmt, "path": str(out), "bytes": out.stat().st_size, "input_shape": ["batch", *shape],
            "max_abs_diff": diff}
