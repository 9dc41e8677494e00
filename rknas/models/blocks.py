"""Building blocks shared by every stage strategy: the pre-activation unit and the RK block."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint, noop_context_fn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the paper's settings (eps 1e-3, PyTorch momentum 0.01)."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(min(32, k), k) as in the ODE-Net code; falls back to a divisor of k.

    The parameter count (2k) does not depend on the group count, so the fallback for
    widths the paper never used leaves the counts untouched.
    """
    groups = min(32, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def concat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Channel-wise concatenation (y_n first, then stages in order), skipping a copy for one input.

    Args:
        tensors: (N, C_i, H, W) tensors of the same N, H, W.

    Returns:
        Their concatenation along channels (the tensor itself when there is one).
    """
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), dim=1)


try:  # torch >= 2.4
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    SELECTIVE_CHECKPOINTING = True
except ImportError:  # pragma: no cover - older torch recomputes the 1x1 convolutions too
    SELECTIVE_CHECKPOINTING = False


def _keep_convolutions(ctx, op, *args, **kwargs):
    """Selective-checkpoint policy: store convolution outputs, recompute everything else."""
    return CheckpointPolicy.MUST_SAVE if op is torch.ops.aten.convolution.default else CheckpointPolicy.PREFER_RECOMPUTE


def _keep_convolutions_context():
    return create_selective_checkpoint_contexts(_keep_convolutions)


class _RepeatableNorm:
    """One call of a unit's norm that can run again in backward with the same result.

    What ``nn.BatchNorm2d.forward`` decides (batch or running statistics, the update factor)
    and does once (``num_batches_tracked += 1``) is settled here, at the forward pass; the
    recomputation then runs the same op, with the same mode even if the model was switched
    since, but updates copies of the running statistics, so they are updated only once.
    Other norms (GroupNorm: no state) are simply called.
    """

    def __init__(self, norm: nn.Module):
        self.norm = norm
        self.bn = norm if isinstance(norm, nn.modules.batchnorm._BatchNorm) else None
        if self.bn is None:
            return
        bn = self.bn
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(bn.num_batches_tracked)
        self.factor = factor
        self.batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
        use_running = not bn.training or bn.track_running_stats
        self.running = (bn.running_mean, bn.running_var) if use_running else (None, None)
        # Made here, outside the checkpointed region: recomputation must run the same ops.
        mean, var = self.running
        if self.batch_stats and mean is not None and var is not None:  # the op updates them
            self.scratch: tuple[Optional[torch.Tensor], Optional[torch.Tensor]] = (mean.clone(), var.clone())
        else:
            self.scratch = self.running

    def __call__(self, x: torch.Tensor, recompute: bool) -> torch.Tensor:
        if self.bn is None:
            return self.norm(x)
        mean, var = self.scratch if recompute else self.running
        bn = self.bn
        return F.batch_norm(x, mean, var, bn.weight, bn.bias, self.batch_stats, self.factor, bn.eps)


class PreActUnit(nn.Sequential):
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3: the unit each RK stage is made of.

    ``width`` scales the bottleneck (1x1 output = round(width * out_channels)); dropout, when
    > 0, follows each convolution as in the paper's SVHN setting. Convolutions are bias-free.

    The input is a tensor or a sequence of tensors, concatenated on channels (y_n first).

    ``memory_efficient`` works as torchvision's DenseNet option (non-reentrant
    ``torch.utils.checkpoint``): the concatenation of a dense stage grows with the stage index,
    so storing it (and its normalised copy) in every unit makes activation memory quadratic in
    the stages. A memory-efficient unit keeps only its two convolution outputs for backward and
    recomputes the concatenation, BNs and ReLUs there (no convolution runs twice), which makes
    it linear. Outputs, gradients, BN statistics, parameter and FLOP counts are those of the
    plain unit. It acts only in training with gradients enabled; ``True`` always, ``"auto"``
    only when the input is not on the CPU (where it costs about 1.3x step time for half the
    memory, see benchmarks/RESULTS.md), ``False`` never. Give a sequence, not a concatenated
    tensor, so that the concatenation is not stored either.
    """

    # The children, typed for the checker (nn.Module.__getattr__ returns Tensor | Module).
    norm1: nn.Module
    relu1: nn.Module
    conv1: nn.Module
    norm2: nn.Module
    relu2: nn.Module
    conv2: nn.Module
    drop1: nn.Module  # only with dropout
    drop2: nn.Module
    memory_efficient: Union[bool, str]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: float = 1.0,
        dropout: float = 0.0,
        memory_efficient: Union[bool, str] = False,
    ):
        mid = max(1, int(round(width * out_channels)))
        layers: list[tuple[str, nn.Module]] = [
            ("norm1", batch_norm(in_channels)),
            ("relu1", nn.ReLU(inplace=True)),
            ("conv1", nn.Conv2d(in_channels, mid, 1, bias=False)),
        ]
        if dropout > 0:
            layers.append(("drop1", nn.Dropout(dropout)))
        layers += [
            ("norm2", batch_norm(mid)),
            ("relu2", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(mid, out_channels, 3, padding=1, bias=False)),
        ]
        if dropout > 0:
            layers.append(("drop2", nn.Dropout(dropout)))
        super().__init__(OrderedDict(layers))
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.memory_efficient = _check_setting(memory_efficient)

    def forward(self, x: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
        """One unit on its inputs, concatenated along channels (recomputed in backward when memory-efficient).

        Args:
            x: A tensor, or the list of feature maps the unit reads.

        Returns:
            The unit's output feature map.
        """
        inputs = (x,) if isinstance(x, torch.Tensor) else tuple(x)  # a copy: callers append to their lists
        if self.training and torch.is_grad_enabled() and recomputes(self.memory_efficient, inputs[0].device):
            h = self._checkpointed(inputs)
        else:
            h = self.conv1(self.relu1(self.norm1(concat(inputs))))
            if "drop1" in self._modules:
                h = self.drop1(h)
            h = self.conv2(self.relu2(self.norm2(h)))
        if "drop2" in self._modules:
            h = self.drop2(h)
        return h

    def _checkpointed(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The unit up to conv3x3, with only the convolutions' outputs kept for backward.

        Selective checkpointing stores the two convolution outputs (conv1x1: k channels; conv3x3:
        the unit's output, kept by the block anyway) and recomputes the concatenation, BNs and
        ReLUs in backward: memory as if only the 3x3 conv input were stored, and no convolution
        runs twice. Without selective checkpointing (torch < 2.4) the region ends before conv3x3
        and conv1x1 is recomputed too.
        """
        norms = (_RepeatableNorm(self.norm1), _RepeatableNorm(self.norm2))
        drop = self._modules.get("drop1")
        drop_args = (drop.p, drop.training, drop.inplace) if isinstance(drop, nn.Dropout) else None
        selective = SELECTIVE_CHECKPOINTING
        calls: list[None] = []  # the first call is the forward pass, any later one a recomputation

        def unit(*xs: torch.Tensor) -> torch.Tensor:
            calls.append(None)
            again = len(calls) > 1
            h = self.conv1(self.relu1(norms[0](concat(xs), again)))
            if drop_args is not None:
                h = F.dropout(h, *drop_args)
            h = self.relu2(norms[1](h, again))
            return self.conv2(h) if selective else h

        context = _keep_convolutions_context if selective else noop_context_fn
        h = checkpoint(unit, *inputs, use_reentrant=False, preserve_rng_state=drop is not None, context_fn=context)
        return h if selective else self.conv2(h)


def _check_setting(value: Union[bool, str]) -> Union[bool, str]:
    if value not in (True, False, "auto"):
        raise ValueError(f"memory_efficient must be True, False or 'auto', got {value!r}")
    return value if value == "auto" else bool(value)


def recomputes(setting: Union[bool, str], device: torch.device) -> bool:
    """Whether a unit with ``memory_efficient=setting`` recomputes in training on ``device``.

    Args:
        setting: True, False or "auto" (only off the CPU).
        device: the device of the unit's input.

    Returns:
        True when the unit keeps only its convolution outputs for backward.
    """
    return setting is True or (setting == "auto" and device.type != "cpu")


def set_memory_efficient(module: nn.Module, enabled: Union[bool, str] = True) -> int:
    """Set ``memory_efficient`` of every PreActUnit inside ``module``.

    The network builder calls this on each built stage block, so blocks of any strategy made of
    PreActUnits get it without a change to the builder contract.

    Args:
        module: a stage block (or any module) that may contain PreActUnits.
        enabled: True, False or "auto" (see PreActUnit).

    Returns:
        How many PreActUnits were set.

    Raises:
        ValueError: for any other value.
    """
    enabled = _check_setting(enabled)
    units = [m for m in module.modules() if isinstance(m, PreActUnit)]
    for unit in units:
        unit.memory_efficient = enabled
    return len(units)


class RKBlock(nn.Module):
    """One RK time step: y_{n+1} = y_n + sum_i e_i (Algorithm 1 of the paper).

    Phase I is a dense block growing ``stages`` times by ``channels`` (Eq 26: x_i from y_n and
    x_1..x_{i-1}). Phase II (mode I or R, own weights) recomputes each increment from y_n and
    the other stages: R uses the Phase-I values x_j (Eq 27), I replaces earlier ones by the
    already updated e_j (Eq 28). Mode E stops after Phase I (e_i = x_i, Eq 17).
    """

    MODES = ("E", "I", "R")

    def __init__(self, channels: int, stages: int, mode: str = "E", width: float = 1.0, dropout: float = 0.0):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"RKBlock mode must be one of {self.MODES}, got {mode!r}")
        if mode != "E" and stages < 2:
            raise ValueError(f"RKBlock mode {mode} needs stages >= 2 (alternate update), got {stages}")
        self.channels, self.stages, self.mode = channels, stages, mode
        k = channels
        self.phase1 = nn.ModuleList(PreActUnit(i * k, k, width, dropout) for i in range(1, stages + 1))
        self.phase2 = (
            nn.ModuleList(PreActUnit(stages * k, k, width, dropout) for _ in range(stages))
            if mode != "E"
            else nn.ModuleList()
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """One Runge-Kutta time step.

        Args:
            y: y_n, of shape (N, k, H, W).

        Returns:
            y_{n+1}, of the same shape.
        """
        # Units get the stage lists and concatenate them themselves, so that a memory-efficient
        # unit can drop its concatenation after the forward pass.
        feats = [y]
        for unit in self.phase1:
            feats.append(unit(feats))
        xs = feats[1:]
        if self.mode == "E":
            increments = xs
        elif self.mode == "R":
            increments = [unit([y, *xs[:i], *xs[i + 1 :]]) for i, unit in enumerate(self.phase2)]
        else:  # "I": stage i sees the updated e_1..e_{i-1} and the Phase-I x_{i+1}..x_s
            increments = []
            for i, unit in enumerate(self.phase2):
                increments.append(unit([y, *increments, *xs[i + 1 :]]))
        out = y
        for e in increments:
            out = out + e
        return out
