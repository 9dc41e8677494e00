"""Warm start: start_from entries become the space's own parameters, or one clear error."""

import warnings

import optuna
import pytest
import yaml

from rknas.errors import ConfigError
from rknas.models.registry import model_config
from rknas.search.space import load_space, parse_space
from rknas.search.warmstart import start_params

SHIPPED_WITH_STARTS = ["mnist_default", "fashion_mnist_default", "fashion_mnist_pareto", "cifar10_default", "cifar100_default"]
NETWORK_KEYS = ("framework", "strategy", "stages", "k", "steps", "attention", "multiscale", "width", "dropout")


def first_trial(space, params):
    """Enqueue ``params`` in a new study and run the space's sampling on the trial it becomes.

    Optuna warns (and samples instead) when an enqueued value is not in the distribution;
    here that is an error.
    """
    study = optuna.create_study(directions=space.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(params, skip_if_exists=True)
    trial = study.ask()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = space.sample(trial)
    return trial, {**trial.params, **fixed}


def space_of(**overrides):
    raw = {"name": "t", "data": {"name": "digits"}, "framework": "cifar",
           "architecture": {"periods": 2, "strategy": ["E", "I", "R"], "stages": {"low": 1, "high": 3},
                            "k": {"low": 8, "high": 32, "step": 8}, "attention": [True, False]},
           "training": {"lr": {"low": 0.01, "high": 1.0, "log": True}, "batch_size": [32, 64]}}
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_space(raw, "t")


@pytest.mark.parametrize("name", SHIPPED_WITH_STARTS)
def test_shipped_spaces_start_from_paper_models_that_become_those_networks(name):
    space = load_space(name)
    assert len(space.start_from) >= 9 and all(isinstance(e, str) for e in space.start_from)
    for entry, params in zip(space.start_from, start_params(space)):
        _, values = first_trial(space, params)
        net, _ = space.configs(values)
        want = model_config(entry)
        assert {k: getattr(net, k) for k in NETWORK_KEYS} == {k: getattr(want, k) for k in NETWORK_KEYS}, entry


def test_stage_choices_that_need_min_stages_names():
    """With a list of stage counts, I and R get p<N>_stages_min2 (see space.sample); a model with I must use it."""
    space = space_of(architecture={"periods": 1, "stages": [1, 2, 3], "k": [16, 24, 32], "attention": False,
                                   "multiscale": False}, framework="mnist", data={"name": "fashion_mnist"})
    [params] = start_params(space, ["rkcnn_i_2_mnist_k32"])
    assert params == {"p1_strategy": "I", "p1_stages_min2": 2, "p1_k": 32}
    _, values = first_trial(space, params)
    net, _ = space.configs(values)
    assert (net.strategy, net.stages, net.k) == (["I"], [2], [32])
    [params] = start_params(space, [{"strategy": "E", "stages": 1}])
    assert params == {"p1_strategy": "E", "p1_stages": 1}


def test_a_mapping_sets_what_it_names_and_the_rest_is_sampled():
    space = space_of()
    [params] = start_params(space, [{"strategy": ["E", "R"], "stages": [1, 2], "lr": 0.1}])
    assert params == {"p1_strategy": "E", "p1_stages": 1, "p2_strategy": "R", "p2_stages": 2, "lr": 0.1}
    trial, values = first_trial(space, params)
    assert {k: values[k] for k in params} == params
    assert {"p1_k", "p2_k", "attention", "batch_size"} <= set(trial.params)  # sampled


def test_a_stage_count_without_its_strategy_is_kept_whichever_strategy_is_sampled():
    space = space_of(architecture={"stages": [1, 2, 3]})
    [params] = start_params(space, [{"stages": 2}])
    assert params == {"p1_stages": 2, "p1_stages_min2": 2, "p2_stages": 2, "p2_stages_min2": 2}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(6):
        study.enqueue_trial(params)
    for _ in range(6):
        t = study.ask()
        fixed = space.sample(t)
        assert [{**t.params, **fixed}[f"p{p}_stages"] for p in (1, 2)] == [2, 2]


def test_a_model_with_overrides():
    space = load_space("fashion_mnist_default")
    [params] = start_params(space, [{"model": "rkcnn_r_2_mnist_k26", "k": 40, "lr": 0.2}])
    assert params == {"p1_strategy": "R", "p1_stages": 2, "p1_k": 40, "lr": 0.2}


@pytest.mark.parametrize("entry,fragments", [
    ("rkcnn_x", ["start_from[0] (rkcnn_x)", "unknown model 'rkcnn_x'"]),
    ("rkcnn_i_2_mnist_k32",
     ["does not fit", "mnist-framework model, the space's framework is cifar", "1 period(s), the space 2"]),
    ({"k": 12}, ["p1_k = 12 is not in the space (integers 8..32 in steps of 8)"]),
    ({"k": 40}, ["p1_k = 40 is not in the space"]),
    ({"lr": 5.0}, ["lr = 5.0 is not in the space (0.01..1.0 (log))"]),
    ({"batch_size": 128}, ["batch_size = 128 is not in the space (choices [32, 64])"]),
    ({"strategy": "Q"}, ["p1_strategy = 'Q' is not in the space (choices ['E', 'I', 'R'])"]),
    ({"strategy": "I", "stages": 1}, ["p1_stages = 1 is not in the space (integers 2..3)"]),
    ({"width": 2.0}, ["width = 2.0 is not in the space (fixed at 1.0)"]),
    ({"attention": 1}, ["attention = 1 is not in the space (choices [True, False])"]),
    ({"k": [8, 8, 8]}, ["k has 3 values, the space has 2 period(s)"]),
    ({"image_size": 8}, ["unknown key(s) 'image_size' (image_size: set by the space and its data)"]),
    ({"colour": 1}, ["unknown key(s) 'colour'", "allowed: model, strategy"]),
    (3, ["an entry is a model name or a mapping"]),
])
def test_entries_that_do_not_fit_are_one_clear_error(entry, fragments):
    with pytest.raises(ConfigError) as exc:
        start_params(space_of(), [entry])
    message = str(exc.value)
    assert "\n" not in message and message.startswith("space 't': start_from[0]")
    for f in fragments:
        assert f in message


def test_a_space_file_with_a_bad_entry_fails_at_load(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "digits"}, "architecture": {"k": [8, 16]}, "start_from": [{"k": 24}]}))
    with pytest.raises(ConfigError, match=r"bad.yaml: start_from\[0\] \(\{k: 24\}\): p1_k = 24 is not in the space"):
        load_space(str(path))


def test_a_model_for_other_data_is_refused_by_the_search_before_anything_is_written(tmp_path, cli):
    """digits is 8x8: the paper's 32x32 CIFAR models fit the space's ranges but not the data."""
    space = {"name": "d3", "data": {"name": "digits"}, "architecture": {"periods": 3, "strategy": ["E", "I", "R"],
             "stages": {"low": 1, "high": 2}, "k": {"low": 8, "high": 128, "step": 8}}}
    path = tmp_path / "d3.yaml"
    path.write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path}/s.db"
    code, out, err = cli("search", "--space", path, "--trials", "1", "--storage", url, "--start-from", "rkcnn_e_2_2_2_k120")
    assert code == 2, err
    assert err.strip().splitlines() == [
        "error: --start-from[0] (rkcnn_e_2_2_2_k120): model 'rkcnn_e_2_2_2_k120' does not fit: "
        "it takes 3 input channel(s), the data has 1; it takes 32x32 images, the data has 8x8"
    ]
    assert not (tmp_path / "s.db").exists(), "a refused first search leaves no database file behind"
    # A database that was there before is kept, with what it held.
    optuna.create_study(study_name="other", storage=url)
    code, _, err = cli("search", "--space", path, "--trials", "1", "--storage", url, "--start-from", "rkcnn_e_2_2_2_k120")
    assert code == 2, err
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["other"]


def test_search_hands_repeated_start_from_to_the_runner(monkeypatch, cli):
    seen = []

    def fake_run_search(opts):
        seen.append(opts)
        raise ConfigError("stopped by the test")

    monkeypatch.setattr("rknas.search.runner.run_search", fake_run_search)  # the CLI imports it when a search runs
    code, _, err = cli("search", "--space", "digits_quick", "--start-from", "rkcnn_a", "--start-from", "rkcnn_b")
    assert code == 2 and "stopped by the test" in err
    assert seen[0].start_from == ["rkcnn_a", "rkcnn_b"]


def test_the_documented_example_space_and_its_start_from_load():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "search-spaces.md").read_text(encoding="utf-8")
    raw = yaml.safe_load(re.search(r"## Keys\n\n```yaml\n(.*?)```", text, re.S).group(1))
    space = parse_space(raw, "docs/search-spaces.md")
    assert len(start_params(space)) == len(raw["start_from"]) == 3


# ---- transfer: the top networks of another study or of a bench table ------------------------

def network(strategy, stages, k, attention=True):
    return {"framework": "cifar", "strategy": strategy, "stages": stages, "k": k, "steps": [1, 1], "attention": attention,
            "multiscale": True, "width": 1.0, "dropout": 0.0, "classes": 10, "in_channels": 1, "image_size": 8}


def earlier_study(url, name="earlier"):
    """A finished study of another data set: three complete trials, recorded networks, a tie at the top."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    dist = optuna.distributions.CategoricalDistribution([0])
    for value, net, size in [(0.90, network(["I", "E"], [2, 1], [16, 24]), 3000),
                             (0.95, network(["R", "R"], [2, 2], [32, 8]), 5000),
                             (0.95, network(["E", "I"], [3, 2], [8, 8]), 2000),
                             (0.50, network(["E", "E"], [1, 1], [8, 8]), 100)]:
        study.add_trial(optuna.trial.create_trial(params={"x": 0}, distributions={"x": dist}, value=value,
                                                  user_attrs={"network": net, "params": size}))
    return study


def test_a_study_entry_starts_from_the_studys_top_networks_in_bests_order(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
    earlier_study(url)
    space = space_of(start_from=[{"study": "earlier", "top": 3}])  # a space checked alone leaves it for the search
    assert start_params(space) == []
    got = start_params(space, storage=url)
    # 0.95 twice: fewer parameters first; then 0.90. The searched settings only (attention too: the space searches it).
    assert got == [
        {"p1_strategy": "E", "p1_stages": 3, "p1_k": 8, "p2_strategy": "I", "p2_stages": 2, "p2_k": 8, "attention": True},
        {"p1_strategy": "R", "p1_stages": 2, "p1_k": 32, "p2_strategy": "R", "p2_stages": 2, "p2_k": 8, "attention": True},
        {"p1_strategy": "I", "p1_stages": 2, "p1_k": 16, "p2_strategy": "E", "p2_stages": 1, "p2_k": 24, "attention": True},
    ]
    trial, fixed = first_trial(space, got[1])
    assert fixed["p1_k"] == 32 and fixed["p2_strategy"] == "R"
    other = tmp_path / "b.db"
    earlier_study(f"sqlite:///{other}", name="elsewhere")
    assert len(start_params(space_of(), [{"study": "elsewhere", "storage": f"sqlite:///{other}", "top": 1}],
                            storage=url)) == 1  # its own storage wins


def test_a_table_entry_starts_from_the_tables_best_architectures_by_their_mean(bench_space):
    from pathlib import Path

    from rknas.bench.tableview import load_bench

    shipped = Path(__file__).resolve().parents[1] / "benchmarks" / "tables" / "fashion_mnist_bench.db.gz"
    bench = load_bench(shipped)
    order = sorted(range(bench.size), key=lambda i: (-bench.truth[i], i))[:4]
    got = start_params(bench_space, [{"table": str(shipped), "top": 4}])
    assert got == [{k: v for k, v in bench.sampled[i].items() if k in got[j]} for j, i in enumerate(order)]
    assert all(len(g) >= 4 for g in got)


@pytest.mark.parametrize("entry,fragments", [
    ({"study": "nope"}, ["start_from[0] (study 'nope'): no study 'nope' in this storage; studies: earlier"]),
    ({"study": "earlier", "top": 0}, ["top must be a whole number of networks, 1 or more (got 0)"]),
    ({"study": "earlier", "best": 2}, ["unknown key(s) 'best'; a study entry takes study, storage, top"]),
    ({"table": "missing.db.gz"}, ["start_from[0] (table 'missing.db.gz')"]),
    ({"study": "earlier", "top": 2}, ["start_from[0] (study 'earlier'), study 'earlier' trial 1: p1_k = 32 is not in the space"]),
])
def test_transfer_entries_that_do_not_fit_are_one_clear_error(tmp_path, entry, fragments):
    url = f"sqlite:///{tmp_path}/a.db"
    earlier_study(url)
    space = space_of(architecture={"k": {"low": 8, "high": 24, "step": 8}})
    with pytest.raises(ConfigError) as exc:
        start_params(space, [entry], where="start_from", storage=url)
    text = str(exc.value)
    assert "\n" not in text and all(f in text for f in fragments), text


def test_a_search_starting_from_a_study_that_is_not_there_is_refused_before_anything_is_written(tmp_path, cli):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "data": {"name": "digits"}, "architecture": {"k": [8, 16]},
                                    "start_from": [{"study": "earlier", "top": 2}]}))
    url = f"sqlite:///{tmp_path}/s.db"
    code, _, err = cli("search", "--space", path, "--trials", "1", "--storage", url)
    assert code == 2, err
    assert err.strip().splitlines() == [
        "error: space 's': start_from[0] (study 'earlier'): no study 'earlier' in this storage; studies: (none)"]
    assert not (tmp_path / "s.db").exists()


def test_the_shipped_digits_table_warm_starts_the_fashion_space():
    """Transfer between the two shipped tables: digits' best networks are Fashion-MNIST space parameters."""
    from pathlib import Path

    from rknas.bench.tableview import load_bench

    digits = Path(__file__).resolve().parents[1] / "benchmarks" / "tables" / "digits_bench.db.gz"
    space = load_space("fashion_mnist_bench")
    space.in_channels, space.image_size, space.classes = 1, 28, 10
    got = start_params(space, [{"table": str(digits), "top": 3}], where="start_from")
    bench = load_bench(digits)
    top = sorted(range(bench.size), key=lambda i: (-bench.truth[i], i))[:3]
    assert got == [{k: v for k, v in bench.sampled[i].items() if k.startswith("p1_")} for i in top]


@pytest.mark.parametrize("text,want", [
    ("study:earlier", {"study": "earlier"}),
    ("study:earlier:2", {"study": "earlier", "top": 2}),
    ("table:/data/t.db.gz:3", {"table": "/data/t.db.gz", "top": 3}),
    ("table:C:/t.db.gz", {"table": "C:/t.db.gz"}),
    ("rkcnn_e_2_mnist_k24", "rkcnn_e_2_mnist_k24"),
])
def test_start_from_on_the_command_line_names_a_study_or_a_table(text, want):
    from rknas.search.warmstart import _shorthand

    assert _shorthand(text) == want


def test_start_from_a_study_on_the_command_line(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
    earlier_study(url)
    got = start_params(space_of(), ["study:earlier:2"], where="--start-from", storage=url)
    assert [g["p1_k"] for g in got] == [8, 32]


def test_a_study_entry_takes_distinct_networks(tmp_path):
    """Two trials of one network (other training settings) count once: top 2 gives two networks."""
    url = f"sqlite:///{tmp_path}/a.db"
    study = optuna.create_study(study_name="dup", storage=url, direction="maximize")
    dist = optuna.distributions.CategoricalDistribution([0, 1])
    same, other = network(["E", "E"], [1, 1], [8, 8]), network(["I", "E"], [2, 1], [16, 8])
    for x, value, net in [(0, 0.9, same), (1, 0.89, same), (0, 0.5, other)]:
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions={"x": dist}, value=value,
                                                  user_attrs={"network": net, "params": 100}))
    got = start_params(space_of(), [{"study": "dup", "top": 2}], where="start_from", storage=url)
    assert [g["p1_strategy"] for g in got] == ["E", "I"]
