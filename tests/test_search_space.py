"""Search-space files: validation errors name the file, the key and what is allowed."""

from pathlib import Path

import optuna
import pytest
import yaml

from rknas.errors import ConfigError
from rknas.search.space import load_space, space_files

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["digits_quick", "fashion_mnist_default", "fashion_mnist_pareto", "mnist_default", "cifar10_default",
           "cifar100_default", "svhn_default"]


def test_the_pareto_space_trades_accuracy_for_size_around_the_paper_models():
    space = load_space("fashion_mnist_pareto")
    assert space.metrics == ["val_accuracy", "params"] and space.directions == ["maximize", "minimize"]
    assert space.framework == "mnist" and space.data.name == "fashion_mnist"
    assert not space.fidelity.early_stopping  # ASHA ranks by accuracy only and would cut small networks
    k = space.architecture.k
    assert k.low < 20 and k.high > 32 and (20 - k.low) % k.step == 0  # around the paper's k = 20..32


def write(tmp_path, data, name="s.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return str(p)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spaces_load_and_sample(name):
    space = load_space(name)
    assert space.name == name
    study = optuna.create_study(directions=space.directions)
    for _ in range(5):
        trial = study.ask()
        fixed = space.sample(trial)
        net, train = space.configs({**trial.params, **fixed})
        assert net.periods == space.architecture.periods


def test_paper_models_are_inside_the_paper_spaces():
    """cifar10_default contains RKCNN-I-5_5_6 (150,120,120); fashion/mnist contain RKCNN-I-2 k=32."""
    c10 = load_space("cifar10_default").architecture
    assert "I" in c10.strategy and c10.stages.low <= 5 and c10.stages.high >= 6
    assert c10.k.low <= 120 and c10.k.high >= 150 and (150 - c10.k.low) % c10.k.step == 0 and (120 - c10.k.low) % c10.k.step == 0
    mn = load_space("mnist_default").architecture
    assert "I" in mn.strategy and mn.stages.low <= 2 <= mn.stages.high and (32 - mn.k.low) % mn.k.step == 0


def test_strategies_that_need_more_stages_are_never_proposed(tmp_path):
    path = write(tmp_path, {"data": {"name": "digits"}, "architecture": {"periods": 2, "strategy": ["E", "I", "R"],
                                                                       "stages": {"low": 1, "high": 2}, "k": 8}})
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        t = study.ask()
        space.sample(t)
        for p in (1, 2):
            s, n = t.params[f"p{p}_strategy"], t.params[f"p{p}_stages"]
            seen.add((s, n))
            assert not (s in ("I", "R") and n < 2)
        study.tell(t, 0.5)
    assert ("E", 1) in seen and ("I", 2) in seen


def test_strategy_that_can_never_fit_is_an_error(tmp_path):
    path = write(tmp_path, {"data": {"name": "digits"}, "architecture": {"strategy": ["I"], "stages": 1}})
    with pytest.raises(ConfigError, match="no listed strategy works with at most 1 stages"):
        load_space(path)


@pytest.mark.parametrize(
    "data,fragments",
    [
        ({"data": {"name": "digits"}, "framework": "imagenet"}, ["framework", "'cifar' or 'mnist'"]),
        ({"data": {"name": "digits"}, "architecture": {"strategy": ["E", "Q"]}}, ["architecture.strategy", "unknown stage strategy 'Q'", "known: E, I, R"]),
        ({"data": {"name": "digits"}, "architecture": {"stages": {"low": 4, "high": 2}}}, ["architecture.stages", "low (4.0) must be <= high (2.0)"]),
        ({"data": {"name": "digits"}, "fidelity": {"epochs": 0}}, ["fidelity.epochs", "greater than or equal to 1"]),
        ({"data": {"name": "digits"}, "bogus": 1}, ["bogus: not a setting (known: architecture, ", "training)"]),
        ({"data": {"name": "digits"}, "objectives": [{"metric": "params", "direction": "minimize"}]}, ["val_accuracy must be one of the objectives"]),
        ({"data": {"name": "digits"}, "objectives": [{"metric": "loss", "direction": "minimize"}]}, ["objectives.0.metric", "'val_accuracy', 'params' or 'flops'"]),
        ({"framework": "cifar"}, ["data: is required"]),
        ({"data": {"name": "digits"}, "architecture": {"k": {"low": 0, "high": 8}}}, ["architecture.k: 0.0 is not allowed", "k must be positive"]),
        ({"data": {"name": "digits"}, "architecture": {"dropout": [0.0, 1.5]}}, ["architecture.dropout: 1.5 is not allowed", "[0, 1)"]),
        ({"data": {"name": "digits"}, "training": {"optimizer": ["sgd", "rmsprop"]}}, ["training.optimizer: 'rmsprop'", "'sgd' or 'adamw'"]),
        ({"data": {"name": "digits"}, "training": {"lr": -0.1}}, ["training.lr: -0.1 is not allowed", "greater than 0"]),
        ({"data": {"name": "digits"}, "training": {"batch_size": []}}, ["training.batch_size: an empty list"]),
        ({"data": {"name": "digits", "val_fraction": 1.5}}, ["data.val_fraction", "less than 1"]),
        ({"data": {"name": "digits", "train_subset": 0}}, ["data.train_subset", "greater than or equal to 1"]),
    ],
)
def test_schema_errors_name_file_key_and_allowed_values(tmp_path, data, fragments):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    msg = str(err.value)
    assert msg.startswith(path)
    for f in fragments:
        assert f in msg


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "data:\n  name: digits\n architecture: [\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: invalid YAML at line \d+"):
        load_space(path)


def test_unknown_space_lists_known():
    with pytest.raises(ConfigError) as err:
        load_space("nope")
    assert "unknown search space 'nope'" in str(err.value) and "digits_quick" in str(err.value)


def test_spaces_directory_is_found():
    assert space_files()["digits_quick"][0] == REPO / "search_spaces" / "digits_quick.yaml"


def test_stage_choices_conditioned_on_strategy(tmp_path):
    """A list of stage counts with strategies of different min_stages must not trip Optuna's
    rule that categorical choices stay fixed per parameter name."""
    path = write(tmp_path, {"data": {"name": "digits"}, "architecture": {"periods": 1, "strategy": ["E", "I"], "stages": [1, 2, 3], "k": 8}})
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    seen = set()
    for _ in range(25):
        t = study.ask()
        fixed = space.sample(t)
        net, _ = space.configs({**t.params, **fixed})
        seen.add((net.strategy[0], net.stages[0]))
        assert not (net.strategy[0] == "I" and net.stages[0] < 2)
        study.tell(t, float(net.stages[0]))
    assert {("E", 1), ("I", 2)} <= seen or {("E", 1), ("I", 3)} <= seen


def test_a_new_config_field_is_searchable_with_no_other_edit(tmp_path):
    """The schema is derived from the configs: a throwaway field is loaded, checked, sampled and built."""
    from pydantic import Field

    from rknas.config import NetworkConfig, TrainConfig
    from rknas.search.space import parse_space, space_schema

    class MyTrain(TrainConfig):
        grad_clip: float = Field(5.0, gt=0)

    class MyNet(NetworkConfig):
        gates: list[int] = Field(default_factory=lambda: [1])  # a per-period field

    schema = space_schema(MyNet, MyTrain)
    raw = {"data": {"name": "digits"}, "architecture": {"periods": 2, "strategy": ["E"], "stages": 1, "k": 8,
                                                        "gates": {"low": 1, "high": 3}},
           "training": {"grad_clip": [0.5, 1.0]}}
    space = parse_space(raw, "mine.yaml", schema=schema)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        t = study.ask()
        fixed = space.sample(t)
        assert {"grad_clip", "p1_gates", "p2_gates"} <= set(t.params)
        net, train = space.configs({**t.params, **fixed})
        assert isinstance(net, MyNet) and isinstance(train, MyTrain)
        assert train.grad_clip in (0.5, 1.0) and all(1 <= g <= 3 for g in net.gates)
        seen.add(train.grad_clip)
        study.tell(t, 0.0)
    assert seen == {0.5, 1.0}
    with pytest.raises(ConfigError, match=r"mine.yaml: training.grad_clip: -1 is not allowed: .*greater than 0"):
        parse_space({**raw, "training": {"grad_clip": [1.0, -1]}}, "mine.yaml", schema=schema)
    # The real configs' fields are all there too (e.g. memory options added to NetworkConfig later).
    from rknas.search.space import Architecture, Training

    assert set(NetworkConfig.model_fields) - {"framework", "classes", "in_channels", "image_size"} <= set(Architecture.model_fields)
    assert set(TrainConfig.model_fields) - {"epochs", "seed", "crop_pad", "flip", "milestones"} <= set(Training.model_fields)


def test_a_range_on_a_non_numeric_setting_is_an_error(tmp_path):
    path = write(tmp_path, {"data": {"name": "digits"}, "training": {"optimizer": {"low": 1, "high": 2}}})
    with pytest.raises(ConfigError, match="training.optimizer: a range needs a numeric setting"):
        load_space(path)


def test_the_two_bench_spaces_search_the_same_architectures_on_other_data():
    """digits_bench exists to transfer a table's best networks to the other table's search."""
    fashion, digits = load_space("fashion_mnist_bench"), load_space("digits_bench")
    assert fashion.data.name != digits.data.name
    assert fashion.architecture.model_dump() == digits.architecture.model_dump()
    assert digits.training.model_dump() == fashion.training.model_dump()  # one recipe, other data
