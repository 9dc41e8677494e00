"""The RKCNNs of the paper's Tables 2-5 as named models, registered through the same hook
(``register_models``) that third-party plugins use. CIFAR-10 heads; pass ``classes=100`` to
``rknas.create_model`` for CIFAR-100."""

from __future__ import annotations

from typing import Any

from rknas.hookspecs import hookimpl


def _paper_models() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s, ks in (("E", (24, 30, 32)), ("I", (20, 26, 32)), ("R", (20, 26, 32))):
        for k in ks:
            out.append({"framework": "mnist", "strategy": s, "stages": 2, "k": k})
    out.append({"strategy": "E", "stages": [2, 2, 2], "k": 120})
    for s in ("I", "R"):
        for kp in ([26, 28, 28], [78, 78, 80], [120]):
            out.append({"strategy": s, "stages": [2, 2, 2], "k": kp})
    for s, stages, kps in (
        ("E", [5, 5, 5], ([80], [120])),
        ("I", [5, 5, 5], ([80], [120])),
        ("I", [5, 5, 6], ([150, 120, 120],)),
        ("R", [5, 5, 5], ([80], [120])),
        ("R", [3, 4, 4], ([180],)),
    ):
        for kp in kps:
            out.append({"strategy": s, "stages": stages, "k": kp})
    return out


PAPER_MODELS = tuple(_paper_models())


@hookimpl
def register_models(register):
    for config in PAPER_MODELS:
        register(config)  # named from the config: rkcnn_i_5_5_6_k150_120_120
