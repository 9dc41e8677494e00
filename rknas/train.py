"""One training loop, used by search trials and by `rknas train`.

Short trials need care that long paper runs do not: the learning-rate schedule is scaled to
the trial's own epochs (warm-up, then cosine or step decay), and BatchNorm statistics are
recomputed on training batches before every evaluation, because with momentum 0.01 the
running averages lag far behind the weights after only a few hundred steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union, cast

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from rknas.config import DataSpec, NetworkConfig, TrainConfig, format_validation_error, read_yaml  # the schema lives torch-free
from rknas.data.core import TensorData, augment, load_dataset, normalizer, to_float
from rknas.data.download import ensure_dataset
from rknas.errors import ConfigError
from rknas.models.counting import count_flops, count_params
from rknas.models.network import RKCNN, build_network, parse_network_config
from rknas.options import TrainOptions
from rknas.util import atomic_write, differences, torch_threads, training_threads, usable_device, write_json_atomic

# Reading the loss back every step would stall the GPU; check for divergence this often instead.
DIVERGENCE_CHECK_STEPS = 50


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The precision ``fit`` uses on ``device``: "auto" resolved, anything else as given.

    Args:
        precision: "auto", "bf16", "fp16" or "fp32".
        device: where the model runs.

    Returns:
        "bf16", "fp16" or "fp32".
    """
    if precision != "auto":
        return precision
    device = torch.device(device)
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def resolve_channels_last(channels_last: Optional[bool], device: str | torch.device) -> bool:
    """Whether ``fit`` uses the channels-last memory format on ``device`` (None: on CUDA only)."""
    return torch.device(device).type == "cuda" if channels_last is None else channels_last


def autocast(device: str | torch.device, precision: str):
    """The autocast context of a resolved ``precision`` on ``device`` (none for fp32).

    Args:
        device: where the model runs.
        precision: "bf16", "fp16" or "fp32" (see ``resolve_precision``).

    Returns:
        A context manager.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def _batch(x: torch.Tensor, mean, std, channels_last: bool) -> torch.Tensor:
    x = to_float(x, mean, std)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate after ``step`` optimiser steps."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 0.1 ** sum(progress >= m for m in cfg.milestones)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    x: torch.Tensor,
    mean,
    std,
    batch_size: int = 256,
    max_images: int = 4096,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    seed: int = 0,
) -> None:
    """Replace BatchNorm running statistics by exact averages over training images.

    The images are a random sample of at most ``max_images`` (drawn with ``seed``, so the same
    run uses the same sample): the first images of a set sorted by class (an image folder)
    would describe a few classes only.

    ``precision`` and ``channels_last`` should be those of training ("auto" resolves for the
    device of ``x``), so that the statistics describe the activations the model computes.
    """
    precision = resolve_precision(precision, x.device)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    if len(x) > max_images:
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_images]
        x = x[pick.sort().values.to(x.device)]
    with autocast(x.device, precision):
        for i in range(0, len(x), batch_size):
            model(_batch(x[i : i + batch_size], mean, std, channels_last))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TensorData,
    mean,
    std,
    batch_size: int = 512,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict:
    """Accuracy and mean cross-entropy of ``model`` on ``data`` (in eval mode).

    Args:
        model: the network, on the device of ``data``.
        data: images and labels.
        mean: per-channel normalisation mean (0-1 scale).
        std: per-channel normalisation std.
        batch_size: images per forward pass.
        precision: autocast precision ("auto" resolves for the device of ``data``).
        channels_last: feed batches in the channels-last memory format.

    Returns:
        ``{"accuracy": float, "loss": float}``; the sums stay on the device until the end.
    """
    model.eval()
    precision = resolve_precision(precision, data.x.device)
    n = len(data)
    acc_dtype = torch.float32 if data.x.device.type == "mps" else torch.float64  # exact counts, as before
    loss = torch.zeros((), dtype=acc_dtype, device=data.x.device)
    correct = torch.zeros((), dtype=acc_dtype, device=data.x.device)
    with autocast(data.x.device, precision):
        for i in range(0, n, batch_size):
            logits = model(_batch(data.x[i : i + batch_size], mean, std, channels_last)).float()
            y = data.y[i : i + batch_size]
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    loss_sum, n_correct = torch.stack([loss, correct]).tolist()
    return {"accuracy": n_correct / max(1, n), "loss": loss_sum / max(1, n)}


def _check_finite(loss_sum: torch.Tensor, seen: int, epoch: int, step: int) -> None:
    """Raise FloatingPointError if the summed loss is not finite (one host sync)."""
    if not torch.isfinite(loss_sum).item():
        raise FloatingPointError(
            f"training diverged at epoch {epoch} (mean loss {loss_sum.item() / max(1, seen)} after step {step}); "
            "lower the learning rate"
        )


def _atomic_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


@dataclass
class Checkpoint:
    """A run in progress: everything that continues it exactly, written after every epoch.

    The file holds only tensors and plain values, so ``load`` reads it with
    ``torch.load(..., weights_only=True)``: a file that holds anything else is refused before
    anything in it runs.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    mean: torch.Tensor
    std: torch.Tensor
    history: list[dict] = field(default_factory=list)
    epoch: int = 0

    def save(self, path: Path, device: torch.device) -> None:
        """Write the state after ``epoch`` (atomically).

        Args:
            path: The checkpoint file.
            device: The run's device (its CUDA generator state is saved too).
        """
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                 "history": self.history, "epoch": self.epoch, "mean": self.mean, "std": self.std}
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        _atomic_save(state, Path(path))

    def load(self, path: Path, device: torch.device) -> None:
        """Continue from a checkpoint file: weights, optimizer, schedule, generators, history.

        Args:
            path: A file ``save`` wrote.
            device: The run's device.

        Raises:
            ConfigError: The file is not such a checkpoint; nothing in it was run.
        """
        try:
            # map to the CPU: generator states must be CPU tensors; load_state_dict moves the rest.
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            self.generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            self.history, self.epoch = state["history"], state["epoch"]
        except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError, ValueError) as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
            why = next((ln for ln in lines if "GLOBAL" in ln), lines[0])[:200]
            raise ConfigError(
                f"{path} is not a checkpoint of this run written by `rknas train` ({type(exc).__name__}: {why}); "
                "nothing in it was run: remove it, or choose another --out"
            ) from None


@dataclass
class _Step:
    """What one epoch of training needs besides the run's state (``Checkpoint``)."""

    cfg: TrainConfig
    train: TensorData  # on the device
    device: torch.device
    precision: str
    channels_last: bool
    steps: int


def _train_epoch(run: Checkpoint, step: _Step, epoch: int) -> dict:
    """One epoch of SGD over ``step.train``; returns its loss, accuracy and learning rate."""
    cfg, device, model, gen = step.cfg, step.device, run.model, run.generator
    model.train()
    perm = torch.randperm(len(step.train), generator=gen).to(device)
    tot_loss = torch.zeros((), device=device)
    tot_correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for b in range(step.steps):
        idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        xb = step.train.x[idx]
        if cfg.crop_pad or cfg.flip:
            xb = augment(xb, cfg.crop_pad, cfg.flip, generator=gen)
        xb, yb = _batch(xb, run.mean, run.std, step.channels_last), step.train.y[idx]
        with autocast(device, step.precision):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()  # without fp16 the scaler passes everything through
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        tot_loss += loss.detach() * len(idx)
        tot_correct += (logits.argmax(1) == yb).sum()
        seen += len(idx)
        if (b + 1) % DIVERGENCE_CHECK_STEPS == 0 or b + 1 == step.steps:
            _check_finite(tot_loss, seen, epoch, b + 1)
    loss_sum, n_correct = torch.stack([tot_loss.double(), tot_correct.double()]).tolist()
    return {"epoch": epoch, "train_loss": loss_sum / max(1, seen), "train_accuracy": n_correct / max(1, seen),
            "lr": float(run.optimizer.param_groups[0]["lr"])}


def fit(
    network: NetworkConfig,
    cfg: TrainConfig,
    train: TensorData,
    val: Optional[TensorData] = None,
    *,
    device: str | torch.device = "cpu",
    on_epoch: Optional[Callable[[int, dict], None]] = None,
    checkpoint: Optional[Path] = None,
    resume: bool = False,
    model: Optional[nn.Module] = None,
) -> tuple[nn.Module, list[dict], tuple[torch.Tensor, torch.Tensor]]:
    """Train ``network`` on ``train``; evaluate on ``val`` after each epoch.

    ``on_epoch(epoch, metrics)`` is called after every epoch (1-based). With ``checkpoint``
    the full state (``Checkpoint``) is written after every epoch, and ``resume`` continues
    from it. Returns the model, the per-epoch history and the normalisation (mean, std).

    Forward passes run under ``cfg.precision`` and ``cfg.channels_last``. Losses and correct
    counts are summed on the device and read once per epoch; divergence (a non-finite loss)
    is checked every ``DIVERGENCE_CHECK_STEPS`` steps and at the end of each epoch, so a
    diverged run stops within that many steps with FloatingPointError.
    """
    device = torch.device(device)
    precision = resolve_precision(cfg.precision, device)
    channels_last = resolve_channels_last(cfg.channels_last, device)
    if device.type == "cuda" and not torch.backends.cudnn.deterministic:
        # fixed input shapes: pick the fastest kernels once (not when the caller asked for reproducibility)
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)  # before the model is built: its initial weights follow the seed
    model = (model or build_network(network)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean, std = normalizer(train)
    steps = max(1, len(train) // cfg.batch_size)  # drop the ragged last batch
    opt = make_optimizer(model, cfg)
    run = Checkpoint(
        model=model, optimizer=opt, scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, steps)),
        generator=torch.Generator().manual_seed(cfg.seed), mean=mean, std=std,
    )
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        run.load(Path(checkpoint), device)
    step = _Step(cfg=cfg, train=train.to(device), device=device, precision=precision, channels_last=channels_last,
                 steps=steps)
    val_d = val.to(device) if val is not None else None
    for epoch in range(run.epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        metrics = _train_epoch(run, step, epoch)
        if cfg.bn_recalibrate:
            recalibrate_bn(model, step.train.x, mean, std, precision=precision, channels_last=channels_last, seed=cfg.seed)
        if val_d is not None:
            ev = evaluate(model, val_d, mean, std, precision=precision, channels_last=channels_last)
            metrics.update(val_accuracy=ev["accuracy"], val_loss=ev["loss"])
        metrics["epoch_time"] = time.perf_counter() - t0
        run.history.append(metrics)
        run.epoch = epoch
        if checkpoint is not None:
            run.save(Path(checkpoint), device)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return model, run.history, (mean, std)


def read_config(path: Path) -> tuple[NetworkConfig, TrainConfig, DataSpec]:
    """The three sections of a config `rknas best` wrote, each checked.

    Raises:
        ConfigError: A section is missing or invalid, in one line naming the file and the section.
    """
    raw = read_yaml(path)
    for key in ("network", "training", "data"):
        if not isinstance(raw.get(key), dict):
            raise ConfigError(f"{path}: missing section {key!r} (expected a file written by `rknas best`)")
    network = parse_network_config(raw["network"], f"{path}: network")
    try:
        training = TrainConfig.model_validate(raw["training"])
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{path}: training", model=TrainConfig)) from None
    try:
        data_spec = DataSpec.model_validate(raw["data"])
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{path}: data", model=DataSpec)) from None
    return network, training, data_spec


RUN_FILE = "run.json"  # what a run was started with: --resume continues only that


def run_settings(network: NetworkConfig, training: TrainConfig, data: DataSpec) -> dict[str, Any]:
    """What makes a training run the same run (not where its files are, nor the device or threads)."""
    return {"network": network.model_dump(mode="json"), "training": training.model_dump(mode="json"),
            "data": data.model_dump(mode="json", exclude={"root"})}


def check_resume(out: Path, settings: dict[str, Any]) -> None:
    """Refuse a ``--resume`` that would not continue the run in ``out`` as it was started.

    A checkpoint holds the state of one schedule (epochs, learning rate, ...): continuing it with
    other settings would run that schedule past its end or mix two runs, and the metrics would
    describe neither.

    Raises:
        ConfigError: No checkpoint in ``out``, or settings that differ from the run's ``run.json``,
            in one line naming the differences.
    """
    ckpt = out / "checkpoint.pt"
    if not ckpt.is_file():
        raise ConfigError(f"--resume: there is no run to continue in {out} (no {ckpt.name}); leave out --resume to start "
                          "one, or give the --out of the run to continue")
    try:
        earlier = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return  # a run from before run.json existed: nothing to compare (its checkpoint is still checked on load)
    changed = differences(earlier, settings)
    if changed:
        shown = "; ".join(f"{key} {a} -> {b}" for key, (a, b) in list(changed.items())[:4])
        more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
        raise ConfigError(f"--resume: the run in {out} was started with other settings ({shown}{more}), so continuing it "
                          "would be neither run; to train longer or differently, start a new run with another --out")


def train_from_config(
    options: Union[TrainOptions, Path, str],
    on_epoch: Optional[Callable[[int, dict], None]] = None,
    on_start: Optional[Callable[[int], None]] = None,
    **fields: Any,
) -> dict:
    """Full training of an exported config on train+validation; test accuracy at the end.

    Writes ``checkpoint.pt`` after each epoch (``resume`` continues from it), then
    ``model.pt`` (weights + configs) and ``metrics.json`` into ``out``.

    Args:
        options: The run's options (``rknas.options.TrainOptions``: config, epochs, out, resume,
            device, data_root, download), or the config file, with the other options as ``fields``.
        on_epoch: Called with ``(epoch, metrics)`` after each epoch.
        on_start: Called with the run's number of epochs once every check passed and the data
            is loaded, just before training starts (a progress display starts here).
        **fields: ``TrainOptions`` fields, when ``options`` is the config file.

    Returns:
        The metrics written to ``metrics.json``.

    Raises:
        ConfigError: Bad options or config, an existing checkpoint without ``resume``, or a
            network that does not fit the data.
    """
    opts = options if isinstance(options, TrainOptions) else TrainOptions(config=Path(options), **fields)
    path, epochs, out, resume = opts.config, opts.epochs, opts.out, opts.resume
    device, data_root, download = opts.device, opts.data_root, opts.download
    network, training, data_spec = read_config(path)
    if epochs is not None:
        training.epochs = epochs
    if data_root:
        data_spec.root = data_root
    dev = usable_device(device)  # before the run folder exists
    out = Path(out or Path("runs") / Path(path).stem)
    ckpt = out / "checkpoint.pt"
    settings = run_settings(network, training, data_spec)
    if resume:
        check_resume(out, settings)
    elif ckpt.exists():
        raise ConfigError(f"{ckpt} exists: pass --resume to continue that run, or choose another --out")
    threads = training_threads(opts.threads)  # a bad RKNAS_THREADS stops here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    if not resume or not (out / RUN_FILE).is_file():
        write_json_atomic(out / RUN_FILE, settings)

    ensure_dataset(data_spec, download=download)
    train, test = load_dataset(data_spec)
    if network.in_channels != train.in_channels or network.image_size != train.image_size:
        raise ConfigError(
            f"{path}: the network expects {network.in_channels}x{network.image_size}x{network.image_size} inputs, "
            f"the data set has {train.in_channels}x{train.image_size}x{train.image_size}"
        )
    if on_start is not None:
        on_start(training.epochs)
    t0 = time.perf_counter()
    with torch_threads(threads):
        model, history, (mean, std) = fit(
            network, training, train, None, device=dev, on_epoch=on_epoch, checkpoint=ckpt, resume=resume
        )
        test_metrics = evaluate(model, test.to(dev), mean, std, precision=training.precision,
                                channels_last=resolve_channels_last(training.channels_last, dev))
    model_cpu = model.to("cpu")
    metrics = {
        "name": network.name,
        "config": str(path),
        "epochs": training.epochs,
        "device": str(dev),
        "threads": threads,
        "test_accuracy": test_metrics["accuracy"],
        "test_loss": test_metrics["loss"],
        "params": count_params(model_cpu),
        "flops": count_flops(cast(RKCNN, model_cpu), network),  # fit built it from `network`
        "train_images": len(train),
        # What of the exported `data:` section applies: the set, its root and options do; the
        # search's split (val_fraction, split_seed, train_subset) does not, by design.
        "data": {"name": data_spec.name, "root": data_spec.root, "options": data_spec.options,
                 "ignored": {k: v for k, v in (("val_fraction", data_spec.val_fraction), ("split_seed", data_spec.split_seed),
                                               ("train_subset", data_spec.train_subset)) if v is not None}},
        "test_images": len(test),
        "wall_time_s": time.perf_counter() - t0,
        "history": history,
    }
    torch.save({"model": model_cpu.state_dict(), "network": network.model_dump(mode="json"),
                "training": training.model_dump(mode="json"), "mean": mean, "std": std}, out / "model.pt")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    metrics["out"] = str(out)
    return metrics
