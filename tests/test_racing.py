"""Racing: which configuration a study believes, when one runs again, and what `best` exports."""

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from rknas.display import studies_table
from rknas.storage import queries
from rknas.storage.racing import RULE, config_key, group_runs, next_repeat, ranked
from rknas.storage.record import StudyRecord

A = {"p1_k": 8, "lr": 0.1}
B = {"p1_k": 16, "lr": 0.1}
C = {"p1_k": 24, "lr": 0.1}


def test_a_configuration_is_its_parameters_without_the_seed():
    assert config_key({**A, "seed": 3}) == config_key({"lr": 0.1, "p1_k": 8, "seed": 9}) != config_key(B)


def test_runs_are_grouped_by_configuration_in_the_order_they_first_completed():
    groups = group_runs([(4, B, 0.7, 200), (1, A, 0.6, 100), (6, A, 0.8, 100)])
    assert [(g.numbers, g.values, g.order) for g in groups] == [([1, 6], [0.6, 0.8], 0), ([4], [0.7], 1)]
    assert groups[0].mean == pytest.approx(0.7) and groups[0].runs == 2


@pytest.mark.parametrize("runs,cap,maximize,want", [
    ([(0, A, 0.9, 100), (1, B, 0.8, 100), (2, B, 0.8, 100)], 2, True, [B, A]),  # runs up to the cap first
    ([(0, A, 0.9, 100), (1, B, 0.8, 100), (2, B, 0.8, 100)], 1, True, [A, B]),  # cap 1: the mean alone
    ([(0, A, 0.8, 100), (1, A, 0.7, 100), (2, A, 0.9, 100), (3, B, 0.78, 100), (4, B, 0.78, 100)], 2, True, [A, B]),
    ([(0, A, 0.8, 300), (1, B, 0.8, 100)], 2, True, [B, A]),  # equal runs and means: fewer parameters
    ([(0, A, 0.8, 100), (1, B, 0.8, 100)], 2, True, [A, B]),  # and then the one that completed first
    ([(0, A, 0.2, 100), (1, B, 0.1, 100)], 2, False, [B, A]),  # a loss: lower is better
])
def test_the_rule(runs, cap, maximize, want):
    assert [g.key for g in ranked(group_runs(runs), cap, maximize)] == [config_key(w) for w in want]


@pytest.mark.parametrize("runs,pending,want", [
    ([(0, A, 0.8, 1)], [], A),  # the first run of all leads on one run: measure it again
    ([(0, A, 0.8, 1)], [A], None),  # its repeat is already waiting or running
    ([(0, A, 0.8, 1), (1, A, 0.8, 1)], [], None),  # it has its two runs
    ([(0, A, 0.8, 1), (1, A, 0.8, 1), (2, B, 0.85, 1)], [], B),  # a challenger above the incumbent's mean
    ([(0, A, 0.8, 1), (1, A, 0.8, 1), (2, B, 0.75, 1)], [], None),  # one below it is not believed, nor repeated
    ([(0, A, 0.8, 1), (1, A, 0.8, 1), (2, B, 0.8, 1)], [], None),  # a tie it would lose (same size, later)
    ([(0, A, 0.8, 2), (1, A, 0.8, 2), (2, B, 0.8, 1)], [], B),  # a tie it would win by the rule (smaller)
    # A's repeat lowered its mean below B's single run, measured earlier: now B is the one to check
    ([(0, A, 0.9, 1), (1, B, 0.85, 1), (2, A, 0.7, 1)], [], B),
    # two challengers: the one that would rank higher first; the other once that one is pending
    ([(0, A, 0.8, 1), (1, A, 0.8, 1), (2, B, 0.85, 1), (3, C, 0.9, 1)], [], C),
    ([(0, A, 0.8, 1), (1, A, 0.8, 1), (2, B, 0.85, 1), (3, C, 0.9, 1)], [C], B),
])
def test_which_configuration_runs_again(runs, pending, want):
    got = next_repeat(group_runs(runs), 2, pending={config_key(p) for p in pending})
    assert (got and got.key) == (want and config_key(want))


def test_no_racing_no_repeats():
    assert next_repeat(group_runs([(0, A, 0.8, 1)]), 1) is None


def test_a_loss_races_downwards():
    runs = [(0, A, 0.2, 1), (1, A, 0.2, 1), (2, B, 0.1, 1), (3, C, 0.3, 1)]
    assert next_repeat(group_runs(runs), 2, maximize=False).key == config_key(B)


def racing_study(cap=2):
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("space", {"racing": cap})
    assert StudyRecord.of(study).space_at() == {"racing": cap}
    return study


def run(study, config, value, **attrs):
    dists = {k: optuna.distributions.CategoricalDistribution([8, 16, 24] if k == "p1_k" else [0.1]) for k in config}
    t = optuna.trial.create_trial(params=config, distributions=dists, value=value,
                                  user_attrs={"params": 1000, "seed": 100 + len(study.trials), **attrs})
    study.add_trial(t)


def test_a_repeat_is_asked_for_once_whoever_asks():
    study = racing_study()
    run(study, A, 0.8)
    [best], repeat = queries.race_step(study, 2)
    assert best.numbers == [0] and repeat.attrs == {"repeat_of": 0, "repeat": 1} and repeat.params == A
    study.enqueue_trial(repeat.params, user_attrs=repeat.attrs)
    # another driver (or this one again) deciding from the same study sees the waiting repeat
    assert queries.race_step(study, 2)[1] is None
    t = study.ask()  # a driver starts it: RUNNING, still pending
    got = {"p1_k": t.suggest_categorical("p1_k", [8, 16, 24]), "lr": t.suggest_categorical("lr", [0.1])}
    assert got == A and t.user_attrs == {"repeat_of": 0, "repeat": 1}  # the same configuration, marked
    assert queries.race_step(study, 2)[1] is None
    study.tell(t, 0.7)
    [best], repeat = queries.race_step(study, 2)
    assert (best.numbers, best.runs, repeat) == ([0, 1], 2, None) and best.mean == pytest.approx(0.75)


def test_a_repeat_that_lowers_the_incumbent_sends_an_earlier_challenger_to_be_measured_again():
    """The step after any complete run reads the whole study, not only the configuration just run."""
    study = racing_study()
    run(study, A, 0.9)
    _, repeat = queries.race_step(study, 2)
    study.enqueue_trial(repeat.params, user_attrs=repeat.attrs)
    run(study, B, 0.85)  # below A's single run: no repeat while A's is pending
    assert queries.race_step(study, 2)[1] is None
    t = study.ask()
    assert {k: t.suggest_categorical(k, [8, 16, 24] if k == "p1_k" else [0.1]) for k in A} == A
    study.tell(t, 0.7)  # A's repeat: A's mean is 0.8 over two runs, B's single run is above it
    [best], repeat = queries.race_step(study, 2)
    assert best.numbers == [0, 1] and best.mean == pytest.approx(0.8)  # trial 1: A's repeat, enqueued before B ran
    assert repeat == queries.Repeat(B, {"repeat_of": 2, "repeat": 1}, 2)


def test_best_exports_the_believed_configuration_and_says_what_stands_behind_it():
    study = racing_study()
    run(study, A, 0.9)  # one lucky run, never confirmed
    run(study, B, 0.8)
    run(study, B, 0.78, repeat_of=1, repeat=1)
    chosen = queries.choose(study)
    assert chosen.number == 1  # B, on two runs, over A's single 0.9
    behind = queries.evidence(study, chosen)
    assert behind["trials"] == [1, 2] and behind["seeds"] == [101, 102] and behind["runs"] == 2
    assert behind["mean"] == pytest.approx(0.79) and behind["rule"] == RULE
    summary = queries.summarize(study)
    assert summary["best_val_accuracy"] == pytest.approx(0.79) and summary["best_runs"] == 2
    console = Console(width=200, record=True)
    console.print(studies_table([summary], "sqlite:///x.db"))
    assert "0.7900 (mean of 2)" in console.export_text()
    assert [t.number for t in queries.candidates(study)] == [1, 0]  # one per configuration


def test_a_study_without_racing_keeps_the_best_single_run():
    study = racing_study(cap=1)
    run(study, A, 0.9)
    run(study, B, 0.8)
    run(study, B, 0.78)
    assert queries.choose(study).number == 0 and queries.evidence(study, queries.choose(study)) is None
    assert queries.summarize(study)["best_runs"] == 1
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3


@pytest.mark.slow  # imports Ray's scheduler
def test_asha_leaves_a_repeat_to_run_every_epoch():
    from types import SimpleNamespace

    from rknas.search.tune_adapter import RepeatAwareASHA
    from rknas.storage.racing import REPEAT_CONFIG_KEY

    asha = RepeatAwareASHA(time_attr="epoch", metric="val_accuracy", mode="max", max_t=4, grace_period=1,
                           reduction_factor=2)
    good, bad = SimpleNamespace(trial_id="a", config={}), SimpleNamespace(trial_id="b", config={})
    repeat = SimpleNamespace(trial_id="r", config={REPEAT_CONFIG_KEY: True})
    for t in (good, bad, repeat):
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, good, {"epoch": 1, "val_accuracy": 0.9}) == "CONTINUE"
    assert asha.on_trial_result(None, bad, {"epoch": 1, "val_accuracy": 0.1}) == "STOP"  # what ASHA does to a trial
    assert asha.on_trial_result(None, repeat, {"epoch": 1, "val_accuracy": 0.1}) == "CONTINUE"  # and not to a repeat
    assert "r" not in asha._trial_info  # nor does the repeat enter a bracket's rungs
    asha.on_trial_complete(None, repeat, {"epoch": 4, "val_accuracy": 0.1})


@pytest.mark.parametrize("value,match", [
    (0, "racing"),
    (-1, "racing"),
    ("two", "racing"),
])
def test_a_bad_racing_cap_is_one_line_exit_2(cli, tmp_path, value, match):
    import yaml
    from gated import SPACE

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SPACE, "racing": value}))
    code, _, err = cli("search", "--space", path, "--trials", "1", "--storage", f"sqlite:///{tmp_path}/x.db")
    assert code == 2 and len(err.strip().splitlines()) == 1 and match in err and "Traceback" not in err, err
    assert not (tmp_path / "x.db").exists()


def test_a_pareto_space_may_race():
    from gated import SPACE

    from rknas.search.space import parse_space

    pareto = [{"metric": "val_accuracy", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}]
    assert parse_space({**SPACE, "racing": 2, "objectives": pareto}, "t").racing == 2


SIGNS = (1.0, -1.0)  # accuracy up, parameters down


@pytest.mark.parametrize("runs,want", [
    # B (2 runs) is believed; A's lucky single run would dominate it but has not earned its place
    ([(0, A, (0.9, 100), 1), (1, B, (0.8, 200), 1), (2, B, (0.8, 200), 1)], [B]),
    # with its second run A is believed too, and dominates B by its mean
    ([(0, A, (0.9, 100), 1), (1, B, (0.8, 200), 1), (2, B, (0.8, 200), 1), (3, A, (0.85, 100), 1)], [A]),
    # two believed points that trade accuracy for size are both on the front
    ([(0, A, (0.9, 300), 1), (1, A, (0.9, 300), 1), (2, B, (0.8, 100), 1), (3, B, (0.8, 100), 1)], [A, B]),
    # before anything has its runs: the front of what there is
    ([(0, A, (0.9, 300), 1), (1, B, (0.8, 100), 1), (2, C, (0.7, 200), 1)], [A, B]),
])
def test_a_pareto_point_joins_the_reported_front_only_after_its_repeats(runs, want):
    from rknas.storage.racing import front

    assert [g.key for g in front(group_runs(runs), 2, SIGNS)] == [config_key(w) for w in want]


@pytest.mark.parametrize("runs,pending,want", [
    ([(0, A, (0.9, 300), 1)], [], A),  # nothing believed yet: a new point may join, measure it again
    ([(0, A, (0.9, 300), 1), (1, A, (0.9, 300), 1), (2, B, (0.8, 100), 1)], [], B),  # smaller: it would join
    ([(0, A, (0.9, 100), 1), (1, A, (0.9, 100), 1), (2, B, (0.8, 200), 1)], [], None),  # dominated by a believed point
    ([(0, A, (0.9, 100), 1), (1, A, (0.9, 100), 1)], [], None),  # it has its runs
    ([(0, A, (0.9, 300), 1), (1, B, (0.8, 100), 1)], [], A),  # two may join: the more accurate first
    ([(0, A, (0.9, 300), 1), (1, B, (0.8, 100), 1)], [A], B),  # then the other, while A's repeat runs
])
def test_which_pareto_point_runs_again(runs, pending, want):
    from rknas.storage.racing import next_repeat_front

    got = next_repeat_front(group_runs(runs), 2, SIGNS, pending={config_key(p) for p in pending})
    assert (got and got.key) == (want and config_key(want))


def test_a_racing_pareto_study_reports_configurations_with_their_runs_by_their_means():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("space", {"racing": 2})
    study.set_user_attr("metrics", ["val_accuracy", "params"])
    dists = {k: optuna.distributions.CategoricalDistribution([8, 16, 24] if k == "p1_k" else [0.1]) for k in A}
    for config, values in [(A, [0.9, 100]), (B, [0.8, 200]), (B, [0.82, 200]), (C, [0.95, 50])]:
        study.add_trial(optuna.trial.create_trial(params=config, distributions=dists, values=values,
                                                  user_attrs={"params": values[1], "seed": len(study.trials)}))
    pool = queries.candidates(study)
    assert [t.number for t in pool] == [1] and pool[0].values == [pytest.approx(0.81), 200]  # B, by its mean
    reported, repeat = queries.race_step(study, 2)
    assert [g.numbers for g in reported] == [[1, 2]] and repeat == queries.Repeat(C, {"repeat_of": 3, "repeat": 1}, 3)
    behind = queries.evidence(study, pool[0])
    assert behind["values"] == [[0.8, 200], [0.82, 200]] and behind["means"] == [pytest.approx(0.81), 200]
    assert behind["mean"] == pytest.approx(0.81)


def test_without_racing_a_tie_goes_to_fewer_parameters_then_the_earlier_trial():
    study = racing_study(cap=1)
    run(study, A, 0.8, params=3000)
    run(study, B, 0.8, params=1000)
    run(study, C, 0.8, params=1000)
    run(study, {"p1_k": 8, "lr": 0.1}, 0.7, params=10)
    pool = queries.candidates(study)
    assert [t.number for t in pool] == [1, 2, 0, 3]
    assert queries.ties(study, pool, pool[0]) == 2 and queries.ties(study, pool, pool[3]) == 0


def test_with_racing_a_tie_is_the_same_mean_over_as_many_runs():
    study = racing_study(cap=2)
    run(study, A, 0.8)
    run(study, A, 0.7, repeat_of=0, repeat=1)
    run(study, B, 0.75)
    run(study, B, 0.75, repeat_of=2, repeat=1)
    run(study, C, 0.75)  # the same mean on one run: not a tie
    pool = queries.candidates(study)
    assert [t.number for t in pool] == [0, 2, 4]  # A and B tie on two runs: A completed first
    assert queries.ties(study, pool, pool[0]) == 1


def test_best_says_how_many_trials_tie_and_how_the_tie_went(cli, tmp_path):
    from rknas.config import NetworkConfig, TrainConfig

    url = f"sqlite:///{tmp_path}/t.db"
    study = optuna.create_study(study_name="t", storage=url, direction="maximize")
    study.set_user_attr("space", {"racing": 1})
    configs = {"network": NetworkConfig(strategy=["E"], stages=[1], k=[8]).model_dump(mode="json"),
               "training": TrainConfig().model_dump(mode="json")}
    run(study, A, 0.8, params=3000, **configs)
    run(study, B, 0.8, params=1000, **configs)
    code, _, err = cli("best", "--study", "t", "--storage", url, "-o", tmp_path / "best.yaml")
    assert code == 0, err
    assert "trial 1," in err  # the smaller of the two
    assert "1 other trial(s) score the same; the tie went to fewer parameters, then the earlier trial" in err, err


def test_evaluate_picks_finalists_in_bests_order():
    from rknas.config import NetworkConfig
    from rknas.evaluate import select_finalists

    study = racing_study()
    nets = {8: NetworkConfig(strategy=["E"], stages=[1], k=[8]), 16: NetworkConfig(strategy=["E"], stages=[1], k=[16])}
    run(study, A, 0.9, network=nets[8].model_dump(mode="json"))  # a lucky single run
    run(study, B, 0.8, network=nets[16].model_dump(mode="json"))
    run(study, B, 0.78, repeat_of=1, repeat=1, network=nets[16].model_dump(mode="json"))
    pool = queries.candidates(study)
    assert [t.number for t in select_finalists(study, top=2, pool=pool)] == [1, 0]  # B on its two runs first
    assert [t.number for t in select_finalists(study, top=2)] == [0, 1]  # by single values without the pool


def test_one_repeat_of_a_configuration_is_pending_at_a_time():
    """A configuration sampled again while its repeat waits does not get a second repeat."""
    study = racing_study(cap=3)
    run(study, A, 0.8)
    study.enqueue_trial(A, user_attrs={"repeat_of": 0, "repeat": 1})
    run(study, A, 0.81)  # the sampler proposed A again and it completed: 2 runs, repeat 1 still waiting
    assert queries.race_step(study, 3)[1] is None


def test_two_drivers_asking_for_the_same_repeat_at_once_enqueue_it_once(any_storage, monkeypatch):
    """Each driver decides from what it read; two that read before either wrote must still make one trial.

    Each asker is held after its check (for up to 2 s, until the other has checked too): without
    the lock both checks find nothing and both write; with it, the second check waits for the
    first writer's commit and finds its trial.
    """
    import threading

    from rknas.storage.retry import RetryingRDBStorage

    optuna.create_study(study_name="race", storage=RetryingRDBStorage(any_storage), direction="maximize")
    checked = threading.Barrier(2, timeout=2)
    real = RetryingRDBStorage._pending_repeat

    def held(self, *args):
        found = real(self, *args)
        try:
            checked.wait()
        except threading.BrokenBarrierError:  # the other asker is waiting for this one's commit
            pass
        return found

    monkeypatch.setattr(RetryingRDBStorage, "_pending_repeat", held)

    def ask() -> None:  # one driver: its own storage (engine, connections), as another process has
        study = optuna.load_study(study_name="race", storage=RetryingRDBStorage(any_storage))
        queries.enqueue_repeat(study, queries.Repeat(A, {"repeat_of": 0, "repeat": 1}, 0))

    drivers = [threading.Thread(target=ask) for _ in range(2)]
    for d in drivers:
        d.start()
    for d in drivers:
        d.join(timeout=60)
    trials = optuna.load_study(study_name="race", storage=any_storage).trials
    assert [(t.state, t.user_attrs) for t in trials] == [(TrialState.WAITING, {"repeat_of": 0, "repeat": 1})]
    # another repeat index, or the same one once the first is no longer pending, is a new trial
    study = optuna.load_study(study_name="race", storage=RetryingRDBStorage(any_storage))
    queries.enqueue_repeat(study, queries.Repeat(A, {"repeat_of": 0, "repeat": 2}, 0))
    t = study.ask()  # repeat 1 starts: it is still pending, so asking for it again changes nothing
    assert study.trials[0].user_attrs["repeat"] == 1 and t.number == 0 and t.params == {} and t.suggest_categorical("p1_k", [8]) == 8
    queries.enqueue_repeat(study, queries.Repeat(A, {"repeat_of": 0, "repeat": 1}, 0))
    assert len(study.trials) == 2
    # a failed repeat put back by its driver (not asked for once) is a new trial while the old one still runs
    study.enqueue_trial(A, user_attrs={"repeat_of": 0, "repeat": 1})
    study.tell(t, state=TrialState.FAIL)
    queries.enqueue_repeat(study, queries.Repeat(A, {"repeat_of": 0, "repeat": 1}, 0))  # that one is pending
    assert [(t.state, t.user_attrs["repeat"]) for t in study.trials] == [
        (TrialState.FAIL, 1), (TrialState.WAITING, 2), (TrialState.WAITING, 1)]
    study.tell(study.ask(), 0.5)  # repeat 2 (the lowest waiting trial) runs and completes
    study.tell(study.ask(), 0.6)  # and the repeat 1 put back
    queries.enqueue_repeat(study, queries.Repeat(A, {"repeat_of": 0, "repeat": 1}, 0))  # nothing pending: a new one
    assert [(t.state, t.user_attrs["repeat"]) for t in study.trials] == [
        (TrialState.FAIL, 1), (TrialState.COMPLETE, 2), (TrialState.COMPLETE, 1), (TrialState.WAITING, 1)]
