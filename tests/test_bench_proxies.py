"""Zero-cost proxies: each score's defining property on tiny networks, and `rknas bench proxies` on a table."""

import json
import math

import pytest
import torch
from support.synthetic_bench import make_table

from rknas.bench import proxies
from rknas.config import NetworkConfig
from rknas.models.network import build_network
from rknas.search.space import parse_space

TINY = dict(framework="cifar", strategy=["E"], stages=[1], k=[4], classes=10, in_channels=1, image_size=8,
            attention=False, multiscale=False)


def tiny(**changes):
    torch.manual_seed(0)
    return build_network(NetworkConfig.model_validate({**TINY, **changes}))


def batch(n=16):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_synflow_is_positive_and_leaves_the_weights_as_they_were():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    score = proxies.synflow(model, *batch())
    assert score > 0 and math.isfinite(score)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k].to(before[k].dtype)) for k in before)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_synflow_grows_with_width():
    assert proxies.synflow(tiny(k=[16]), *batch()) > proxies.synflow(tiny(k=[4]), *batch())


def test_naswot_is_log_det_of_the_agreement_kernel():
    model = tiny()
    x, y = batch(8)
    assert math.isfinite(proxies.naswot(model, x, y))
    same = x[:1].repeat(8, 1, 1, 1)  # eight identical images agree everywhere: K is singular
    assert proxies.naswot(model, same, y) == -math.inf


def test_grad_norm_and_params():
    model = tiny()
    assert proxies.grad_norm(model, *batch()) > 0
    assert proxies.params(model, *batch()) == sum(p.numel() for p in model.parameters())


def test_score_network_times_every_proxy_on_a_fresh_network():
    built = []

    def build():
        built.append(1)
        return tiny()

    out = proxies.score_network(build, *batch())
    assert len(built) == len(proxies.PROXIES)
    assert set(out) == set(proxies.PROXIES) | {f"{p}_s" for p in proxies.PROXIES}
    assert all(out[f"{p}_s"] >= 0 for p in proxies.PROXIES)


DIGITS = {"name": "tiny_bench", "data": {"name": "digits", "val_fraction": 0.2, "train_subset": 300}, "framework": "cifar",
          "architecture": {"periods": 1, "strategy": ["E", "I"], "stages": {"low": 1, "high": 2}, "k": [4, 8, 12],
                           "steps": 1, "attention": False, "multiscale": False},
          "training": {"lr": 0.1, "batch_size": 50, "warmup_epochs": 0}, "fidelity": {"epochs": 2, "min_epochs": 1}}


def test_cli_ranks_the_proxies_against_the_tables_accuracy(cli, tmp_path):
    space = parse_space(DIGITS, "tiny")
    space.in_channels, space.image_size, space.classes = 1, 8, 10
    make_table(tmp_path / "t.db", space, archs=9, seeds=2, epochs=2)
    code, stdout, err = cli("bench", "proxies", "--table", tmp_path / "t.db", "--batch", "16", "--out", tmp_path / "p.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "p.json").read_text())
    assert {r["proxy"] for r in doc["ranking"]} == set(proxies.PROXIES) and all(r["n"] == 9 for r in doc["ranking"])
    kendall = [r["kendall"] for r in doc["ranking"]]
    assert kendall == sorted(kendall, reverse=True) and all(-1 <= k <= 1 for k in kendall)
    assert len(doc["archs"]) == 9 and all(a["truth"] is not None for a in doc["archs"])
    assert "Kendall tau" in stdout


def test_a_missing_table_is_one_line(cli, tmp_path):
    code, _, err = cli("bench", "proxies", "--table", tmp_path / "none.db")
    assert code == 2 and "no such table" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", proxies.PROXIES)
def test_every_proxy_is_documented_in_the_module(name):
    assert f"``{name}``" in proxies.__doc__
