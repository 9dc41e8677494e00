"""Zero-cost proxies: scores of an untrained network that might rank architectures like training does.

Each is written here from its paper's definition and measured against a benchmark table
(``rknas bench proxies``) before anything uses it:

- ``params``: the parameter count, the baseline every proxy must beat.
- ``synflow`` (Tanaka et al. 2020, used for NAS by Abdelfattah et al. 2021): with every weight
  replaced by its absolute value and an all-ones input, ``R = sum(f(1))``; the score is
  ``sum |theta * dR/dtheta|`` over all weights. Data-free; computed in float64, normalisation
  layers in eval mode, so that the product does not overflow.
- ``naswot`` (Mellor et al. 2021): on a minibatch, each image's binary code of which ReLU units
  are active; ``K[i, j]`` counts the units on which images i and j agree (active or inactive
  both); the score is ``log |det K|``.
- ``grad_norm`` (Abdelfattah et al. 2021): the sum over weights of the L2 norm of the
  cross-entropy loss's gradient on one minibatch.

Higher is taken as better for every score.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

PROXIES = ("params", "synflow", "naswot", "grad_norm")


def synflow(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Synaptic flow of ``model`` (its weights are restored afterwards)."""
    model = model.double().eval()
    signs = {}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                signs[name] = torch.sign(p)
                p.abs_()
    model.zero_grad()
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64)
    model(ones).sum().backward()
    score = sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name in signs:
                p.mul_(signs[name])
    model.float()
    return score


def naswot(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """log |det K| of the ReLU activation-pattern agreement kernel on the batch ``x``."""
    n = x.shape[0]
    k = torch.zeros((n, n), dtype=torch.float64)

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        c = (output.detach().reshape(n, -1) > 0).double()
        k.add_(c @ c.t() + (1 - c) @ (1 - c).t())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        model.train()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if float(sign) > 0 else -math.inf


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over weights of the L2 norm of the loss gradient on one batch."""
    model.train()
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return sum(float(p.grad.norm()) for p in model.parameters() if p.grad is not None)


def params(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The parameter count."""
    return float(sum(p.numel() for p in model.parameters()))


SCORES: dict[str, Callable[[nn.Module, torch.Tensor, torch.Tensor], float]] = {
    "params": params, "synflow": synflow, "naswot": naswot, "grad_norm": grad_norm,
}


def score_network(build: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """Every proxy of one architecture at initialisation, each on a freshly built network.

    Args:
        build: Builds the untrained network (called once per proxy, after seeding).
        x: A minibatch of images, normalised as training sees them.
        y: Its labels.
        seed: The initialisation's seed.

    Returns:
        ``{name: score}`` and ``{name + "_s": seconds}`` for each proxy.
    """
    out: dict[str, Any] = {}
    for name, fn in SCORES.items():
        torch.manual_seed(seed)
        model = build()
        t0 = time.perf_counter()
        out[name] = fn(model, x, y)
        out[f"{name}_s"] = time.perf_counter() - t0
    return out


def measure_proxies(table_path: Any, batch: int = 64, data_root: Any = None, download: bool = False,
                    on_arch: Any = None) -> dict[str, Any]:
    """Score every architecture of a table and rank the proxies against its trained accuracy.

    Args:
        table_path: The table (``.db`` or ``.db.gz``).
        batch: Images in the minibatch ``naswot`` and ``grad_norm`` see (the first of the table's
            training split, normalised as training normalises them).
        data_root: Where the table space's data set is, if not where the space says.
        download: Download the data set when it is missing.
        on_arch: Called as ``on_arch(done, total)`` after each architecture.

    Returns:
        ``archs`` (per architecture: ``arch``, ``truth`` and every score with its seconds) and
        ``ranking`` (per proxy: ``spearman``, ``kendall``, ``seconds_per_arch``), best Kendall
        first, over the architectures with a trained accuracy.

    Raises:
        RknasError: The table or its data set cannot be read.
    """
    from scipy.stats import kendalltau, spearmanr

    from rknas.bench.build import space_data
    from rknas.bench.table import BenchTable
    from rknas.bench.tableview import load_bench
    from rknas.config import NetworkConfig
    from rknas.data.core import normalizer, to_float
    from rknas.models.network import build_network
    from rknas.search.space import SearchSpace

    bench = load_bench(table_path)
    with BenchTable.open(table_path) as table:
        archs = table.archs()
    space = SearchSpace.model_validate(bench.space)
    train, _, _ = space_data(space, data_root, download)
    mean, std = normalizer(train)
    x, y = to_float(train.x[:batch], mean, std), train.y[:batch].long()
    truth = {bench.keys[a.key]: float(bench.truth[bench.keys[a.key]]) for a in archs if a.key in bench.keys}
    rows = []
    for i, a in enumerate(archs):
        network = NetworkConfig.model_validate(a.network)
        scores = score_network(lambda net=network: build_network(net), x, y)  # type: ignore[misc]
        idx = bench.keys.get(a.key)
        ok = idx is not None and bool(bench.curves[idx])
        rows.append({"arch": a.arch, "params": a.params, "truth": truth[idx] if ok and idx is not None else None, **scores})
        if on_arch is not None:
            on_arch(i + 1, len(archs))
    rated = [r for r in rows if r["truth"] is not None and all(math.isfinite(r[p]) for p in PROXIES)]
    ranking = []
    for p in PROXIES:
        xs, ys = [r[p] for r in rated], [r["truth"] for r in rated]
        ranking.append({"proxy": p, "n": len(rated), "spearman": float(spearmanr(xs, ys).statistic),
                        "kendall": float(kendalltau(xs, ys).statistic),
                        "seconds_per_arch": sum(r[f"{p}_s"] for r in rows) / max(1, len(rows))})
    ranking.sort(key=lambda r: -r["kendall"])
    return {"table": str(table_path), "batch": batch, "archs": rows, "ranking": ranking}
