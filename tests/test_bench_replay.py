"""`rknas bench replay`: strategies replayed on a table with made-up curves (no training)."""

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
from synthetic_bench import make_table

from rknas.bench import regret
from rknas.bench import replay as rp
from rknas.bench import simulator as sim
from rknas.bench import tableview as tv
from rknas.bench.table import arch_key
from rknas.errors import ConfigError
from rknas.hookspecs import hookimpl
from rknas.report import replay_figure
from rknas.search.samplers import SamplerSpec

SAMPLERS = ["random", "tpe", "nsga2"]


@pytest.fixture(scope="module")
def table(synthetic_table):
    return synthetic_table


@pytest.fixture(scope="module")
def bench(table):
    return tv.load_bench(table[0])


@pytest.mark.parametrize("text,want", [
    ("random", sim.Strategy("random")),
    ("tpe+asha", sim.Strategy("tpe", asha=True)),
    ("tpe+asha+warm", sim.Strategy("tpe", asha=True, warm=True)),
    ("tpe+warm+asha", sim.Strategy("tpe", asha=True, warm=True)),
    ("nsga2+warm", sim.Strategy("nsga2", warm=True)),
    ("tpe+asha+warm+race3", sim.Strategy("tpe", asha=True, warm=True, race=3)),
])
def test_strategy_names(text, want):
    assert sim.parse_strategy(text, SAMPLERS) == want


@pytest.mark.parametrize("text,match", [
    ("bohb", r"no sampler 'bohb'; samplers: random, tpe, nsga2"),
    ("tpe+hyperband", r"only \+asha, \+warm and \+raceN"),
    ("tpe+asha+asha", r"once each"),
    ("tpe+race2+race3", r"once each"),
    ("tpe+race1", r"\+raceN needs a whole number of runs N of 2 or more"),
    ("tpe+race0", r"\+raceN needs a whole number of runs N of 2 or more"),
    ("tpe+racex", r"\+raceN needs a whole number"),
])
def test_unknown_strategies_name_what_exists(text, match):
    with pytest.raises(ConfigError, match=match):
        sim.parse_strategy(text, SAMPLERS)


def test_the_table_truth_is_the_mean_final_test_accuracy_over_seeds(table, bench):
    _, truth = table
    assert bench.size == 60
    got = {bench.keys[k]: bench.truth[i] for k, i in bench.keys.items()}
    assert len(got) == 60
    assert bench.best == pytest.approx(max(truth.values()))
    assert not bench.curves[59] and bench.failed[59][0][1] == "diverged"  # all its runs failed: it has no truth


def test_a_proposal_is_found_or_snapped_to_its_nearest_architecture(bench):
    snap = tv.Snapper(bench)
    first = bench.sampled[3]
    assert snap.find(dict(first)) == 3 and snap.snapped == 0
    far = {**first, "p1_k": 1000}  # no such k: the nearest is the same architecture with the largest k
    i = snap.find(far)
    assert snap.snapped == 1
    same = [j for j, s in enumerate(bench.sampled) if all(s[k] == first[k] for k in s if k != "p1_k")]
    assert i in same and bench.sampled[i]["p1_k"] == max(bench.sampled[j]["p1_k"] for j in same)


def _nearest_by_loop(snap, proposal):
    """The snapping rule written as the plain loop it is defined by."""
    best, best_d = 0, float("inf")
    for i, s in enumerate(snap.bench.sampled):
        d = 0.0
        for k in snap.names:
            a, b = proposal.get(k), s.get(k)
            d += abs(float(a) - float(b)) / snap.numeric[k] if k in snap.numeric and isinstance(a, (int, float)) else a != b
        if d < best_d:
            best, best_d = i, d
    return best


def test_snapping_agrees_with_the_plain_loop_ties_included(bench):
    import random

    snap, rng = tv.Snapper(bench), random.Random(0)
    values = {k: sorted({s[k] for s in bench.sampled}, key=repr) for k in snap.names}
    for n in range(300):
        p = {k: rng.choice(v) for k, v in values.items()}
        if n % 3 == 0:
            p["p1_k"] = rng.choice([1, 17, 33, 1000])  # off the table's grid: many equal distances
        if n % 7 == 0:
            p["optimizer"] = ["not", "hashable"]
        if bench.keys.get(arch_key(p)) is None:
            assert snap.find(p) == _nearest_by_loop(snap, p), p
    assert snap.snapped > 200


def test_hypervolume_and_pareto_front():
    assert regret.hypervolume(np.array([[1.0, 1.0]])) == 1.0
    assert regret.hypervolume(np.array([[1.0, 0.5], [0.5, 1.0]])) == pytest.approx(0.75)
    assert regret.hypervolume(np.array([[1.0, 0.5], [0.5, 1.0], [0.4, 0.4]])) == pytest.approx(0.75)  # dominated adds nothing
    assert regret.pareto_mask(np.array([[1, 0.5], [0.5, 1], [0.4, 0.4]])).tolist() == [True, True, False]


@pytest.mark.slow  # Ray's ASHA scheduler imports Ray
def test_a_replay_is_reproducible_from_its_seed(bench):
    s = sim.Strategy("tpe", asha=True)
    a = rp.replay_once(bench, s, 400, 2, seed=3)
    assert a == rp.replay_once(bench, s, 400, 2, seed=3)
    assert a != rp.replay_once(bench, s, 400, 2, seed=4)


def test_simulated_time_runs_the_recorded_epochs_on_w_workers(bench):
    # Every curve has 4 epochs; with one worker trials run one after another, with 3 about three at a time.
    one = rp.replay_once(bench, sim.Strategy("random"), 500, 1, seed=0)
    three = rp.replay_once(bench, sim.Strategy("random"), 500, 3, seed=0)
    assert one["pruned"] == 0 and one["completed"] + one["failed"] == one["trials"] - 1  # the last is cut by the budget
    assert 2.5 * one["completed"] <= three["completed"] <= 3 * one["completed"] + 3
    times = [t for t, _ in one["events"]]
    assert times == sorted(times) and times[-1] <= 500


def test_random_search_with_room_for_everything_ends_at_zero_regret(bench):
    out = rp.replay_once(bench, sim.Strategy("random"), 1e9, 4, seed=0, max_trials=600, judge="all")
    assert out["trials"] == 600
    best_seen = out["events"][-1][1]
    assert best_seen <= 0.003  # the best it observed may differ from the best by seed noise only


def test_judging_on_unseen_seeds_splits_each_architectures_seeds(tmp_path, bench_space):
    path = tmp_path / "four.db"
    make_table(path, bench_space, archs=12, seeds=4, noise=0.01)
    b = tv.load_bench(path)
    v = b.judged_on_unseen(3)
    assert (b.judge, v.judge) == ("all", "unseen")
    for i in range(b.size):
        assert len(v.curves[i]) == 2  # half the seeds stay observable ...
        seen = [next(j for j, c in enumerate(b.curves[i]) if c[0] is s[0]) for s in v.curves[i]]
        judging = [j for j in range(4) if j not in seen]
        # ... and the other half alone judges: truth on test accuracy, val_truth on validation accuracy
        assert v.truth[i] == pytest.approx(statistics.mean(b.tests[i][j] for j in judging))
        assert v.val_truth[i] == pytest.approx(statistics.mean(b.curves[i][j][0][-1] for j in judging))
        assert b.truth[i] == pytest.approx(statistics.mean(b.tests[i]))
    assert v.best == max(v.truth) and b.best == max(b.truth)
    assert np.array_equal(b.judged_on_unseen(3).truth, v.truth)  # the split is the seed's
    assert not np.array_equal(b.judged_on_unseen(4).truth, v.truth)


def test_a_search_that_cannot_see_its_judges_seeds_shows_the_winners_curse(tmp_path, bench_space):
    """Architectures equal up to seed noise: the best observed score is a lucky draw. Judged on
    unseen seeds the reported score overstates the network; judged on every seed it is partly
    its own judge, and the overstatement looks smaller."""
    path = tmp_path / "noisy.db"
    make_table(path, bench_space, archs=40, seeds=4, noise=0.02)
    b = tv.load_bench(path)
    unseen = [rp.replay_once(b, sim.Strategy("random"), 1e9, 2, seed=i, max_trials=40)["overstatement"] for i in range(8)]
    seen = [rp.replay_once(b, sim.Strategy("random"), 1e9, 2, seed=i, max_trials=40, judge="all")["overstatement"]
            for i in range(8)]
    assert statistics.median(unseen) > 0.01  # the maximum of 40 draws with sd 0.02, judged fairly
    assert statistics.median(seen) < statistics.median(unseen)


def test_a_pareto_replay_reports_no_overstatement(bench):
    out = rp.replay_once(bench, sim.Strategy("nsga2"), 300, 2, seed=0, pareto=True)
    assert out["overstatement"] is None and out["worst"] == regret.worst_regret(bench.judged_on_unseen(0), pareto=True)


@pytest.mark.slow  # Ray's ASHA scheduler imports Ray
def test_asha_in_a_replay_stops_what_rays_scheduler_stops(bench):
    """The replay drives Ray's own ASHAScheduler: check each of its decisions against ASHA's rule by hand."""
    from ray.tune.schedulers import ASHAScheduler

    trace = []
    orig = ASHAScheduler.on_trial_result

    def spy(self, controller, trial, result):
        action = orig(self, controller, trial, result)
        trace.append((trial.trial_id, result["epoch"], result["val_accuracy"], action))
        return action

    ASHAScheduler.on_trial_result = spy
    try:
        out = rp.replay_once(bench, sim.Strategy("random", asha=True), 300, 1, seed=0)
    finally:
        ASHAScheduler.on_trial_result = orig
    assert out["pruned"] > 0 and trace
    # One worker: a trial's results arrive in order. ASHA (grace 1, rf 2, one bracket) stops a trial at
    # a rung when its value is below the rung's top half of the values recorded there so far.
    rungs: dict[int, list[float]] = {}
    for tid, epoch, val, action in trace:
        expected = "CONTINUE"
        if epoch in (1, 2):
            recorded = rungs.setdefault(epoch, [])
            recorded.append(val)
            cutoff = np.nanpercentile(recorded, (1 - 1 / 2) * 100) if len(recorded) > 1 else None
            if cutoff is not None and val < cutoff:
                expected = "STOP"
        if epoch == 4:
            expected = "STOP"  # max_t reached
        assert action == expected, (tid, epoch, val)


def test_warm_start_proposes_the_spaces_paper_models_first(bench, bench_space, monkeypatch):
    asked = []
    orig = tv.Snapper.find

    def spy(self, proposal):
        asked.append(proposal)
        return orig(self, proposal)

    monkeypatch.setattr(tv.Snapper, "find", spy)
    rp.replay_once(bench, sim.Strategy("tpe", warm=True), 100, 1, seed=0)
    assert [(p["p1_strategy"], p["p1_k"]) for p in asked[:6]] == [("E", 24), ("E", 32), ("I", 20), ("I", 32), ("R", 20), ("R", 32)]


def test_pareto_regret_is_hypervolume_short_of_the_true_front(bench):
    out = rp.replay_once(bench, sim.Strategy("nsga2"), 1e9, 4, seed=0, pareto=True, max_trials=400)
    true_hv = regret.worst_regret(bench, pareto=True)
    regrets = [r for _, r in out["events"]]
    assert 0 < true_hv and all(r <= true_hv + 1e-12 for r in regrets)
    assert regrets[-1] < 0.1 * true_hv


def test_summaries_give_median_quartiles_and_time_to_target(bench):
    [s] = rp.replay(bench, [sim.Strategy("random")], 300, 2, repeats=5, jobs=1, judge="all")
    assert s.repeats == 5 and len(s.grid) == rp.GRID_POINTS and s.grid[-1] == 300
    assert all(lo <= m <= hi for lo, m, hi in zip(s.q25, s.median, s.q75))
    # A median may rise (the incumbent is chosen on noisy validation), so no monotonicity: the
    # summary must be the median of the repeats' own regrets, each between 0 and the worst.
    worst = regret.worst_regret(bench, pareto=False)
    assert s.median[-1] == pytest.approx(statistics.median(s.final_regret))
    assert all(0 <= r <= worst for r in s.final_regret) and max(s.median) <= worst
    for t in s.time_to_target:
        assert t is None or 0 < t <= 300
    # Judged on unseen seeds, each repeat has its own judges, so its own worst.
    [u] = rp.replay(bench, [sim.Strategy("random")], 300, 2, repeats=5, seed=10, jobs=1)
    worsts = [regret.worst_regret(bench.judged_on_unseen(10 + i), pareto=False) for i in range(5)]
    assert u.judge == "unseen" and all(0 <= r <= w for r, w in zip(u.final_regret, worsts))
    assert len(u.overstatement) == 5 and all(isinstance(o, float) for o in u.overstatement)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_parallel_replays_equal_the_same_replays_in_one_process(bench, monkeypatch, method):
    import multiprocessing as mp

    monkeypatch.setattr(rp, "_pool_context", lambda: mp.get_context(method))
    strategies = [sim.Strategy("random"), sim.Strategy("tpe", warm=True)]
    alone = rp.replay(bench, strategies, 300, 2, repeats=3, seed=5, jobs=1)
    pooled = rp.replay(bench, strategies, 300, 2, repeats=3, seed=5, jobs=2)
    assert [s.to_json() for s in pooled] == [s.to_json() for s in alone]
    assert rp._worker_bench is None  # the table is not kept alive after the pool


@pytest.mark.parametrize("platform,threads,want", [("linux", 1, "fork"), ("linux", 2, "spawn"), ("darwin", 1, "spawn"),
                                                   ("win32", 1, "spawn")])
def test_workers_are_forked_only_where_no_other_thread_could_hold_a_lock(monkeypatch, platform, threads, want):
    import sys
    import threading

    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr(threading, "active_count", lambda: threads)
    assert rp._pool_context().get_start_method() == want


def test_forked_workers_replay_a_sampler_registered_in_this_process(bench, register_plugin, monkeypatch):
    import multiprocessing as mp

    import optuna

    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register(SamplerSpec("qmc2", lambda seed, n: optuna.samplers.RandomSampler(seed=seed), "a plugin's sampler"))

    register_plugin(Plugin())
    monkeypatch.setattr(rp, "_pool_context", lambda: mp.get_context("fork"))
    [s] = rp.replay(bench, [sim.Strategy("qmc2")], 200, 2, repeats=2, jobs=2)
    assert all(t > 0 for t in s.trials)


def test_the_plot_shows_one_median_line_per_strategy(bench):
    sums = rp.replay(bench, [sim.Strategy("random"), sim.Strategy("tpe")], 200, 2, repeats=2, jobs=1)
    fig = replay_figure(sums, "t", pareto=False, target=0.003)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["random (median of 2)", "tpe (median of 2)", "target: 0.3 points"]
    assert "simulated time" in ax.get_xlabel() and "regret" in ax.get_ylabel()
    assert np.allclose(ax.get_lines()[0].get_ydata(), np.array(sums[0].median) * 100)
    ax = replay_figure(sums, "t", pareto=False, target=0.01).axes[0]  # --target 0.01: drawn and named as given
    assert ax.get_lines()[-1].get_label() == "target: 1 point" and ax.get_lines()[-1].get_ydata()[0] == pytest.approx(1.0)


@pytest.mark.slow  # +asha imports Ray
def test_cli_replay_writes_json_and_png(cli, table, tmp_path):
    out = tmp_path / "r" / "replay"
    code, stdout, err = cli("bench", "replay", "--table", table[0], "--strategy", "random,tpe+asha", "--budget", "300",
                            "--repeats", "3", "--workers", "2", "--jobs", "1", "--out", out)
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "replay.json").read_text())
    assert [s["strategy"] for s in doc["strategies"]] == ["random", "tpe+asha"]
    assert doc["archs"] == 60 and len(doc["strategies"][0]["final_regret"]) == 3
    assert (tmp_path / "r" / "replay.png").read_bytes()[:4] == b"\x89PNG"
    text = " ".join(stdout.split())  # the title holds the table's path: where rich wraps it depends on the path's length
    assert "median time to within 0.3 points" in text
    assert "judged on seeds the search never saw" in text and doc["judge"] == "unseen"
    assert "reported score over its judged mean" in text
    assert all(len(s["overstatement"]) == 3 for s in doc["strategies"])


def test_a_replay_tells_a_plain_callable_as_it_tells_a_listener(table):
    """``BenchReplayOptions.on_event`` takes what every other command's does: a listener or a (kind, data) callable."""
    from rknas.bench.replay import run_replay
    from rknas.events import BenchListener
    from rknas.options import BenchReplayOptions

    got: list = []
    run_replay(BenchReplayOptions(table=table[0], strategy="random", budget=60, repeats=2, jobs=1,
                                  on_event=lambda kind, data: got.append((kind, data))))
    assert got == [("replay_repeat", {"strategy": "random", "done": 1, "total": 2}),
                   ("replay_repeat", {"strategy": "random", "done": 2, "total": 2})]

    class Counting(BenchListener):
        def __init__(self):
            self.seen = []

        def replay_repeat(self, *, strategy, done, total):
            self.seen.append((strategy, done, total))

    listener = Counting()
    run_replay(BenchReplayOptions(table=table[0], strategy="random", budget=60, repeats=2, jobs=1, on_event=listener))
    assert listener.seen == [("random", 1, 2), ("random", 2, 2)]


@pytest.mark.parametrize("args,match", [
    (["--strategy", "bohb"], "unknown strategy 'bohb'"),
    (["--budget", "0"], "budget"),
    (["--strategy", "random+warm", "--table", "{broken}"], "not a readable benchmark table"),
    (["--table", "{missing}"], "no such table"),
    (["--strategy", "random+asha", "--min-epochs", "4"], "stops nothing"),
    (["--table", "{one_seed}"], "--judge unseen needs two or more complete seeds"),
    (["--judge", "mine"], "judge"),
])
def test_bad_replay_input_is_one_line_exit_2_nothing_written(cli, table, tmp_path, args, match, bench_space):
    broken = tmp_path / "broken.db"
    broken.write_bytes(table[0].read_bytes()[:5000])
    one_seed = tmp_path / "one.db"
    if "{one_seed}" in args:
        make_table(one_seed, bench_space, archs=5, seeds=1)
    args = [str(a).format(broken=broken, missing=tmp_path / "none.db", one_seed=one_seed) for a in args]
    base = {"--table": str(table[0]), "--budget": "100", "--repeats": "2", "--jobs": "1"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    out = tmp_path / "o" / "replay"
    code, _, err = cli("bench", "replay", *[x for kv in base.items() for x in kv], "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err
    assert not (tmp_path / "o").exists()


def test_a_plugin_sampler_is_replayed_by_name(bench, register_plugin):
    import optuna

    made = []

    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            def make(seed, objectives):
                made.append(seed)
                return optuna.samplers.RandomSampler(seed=seed)

            register(SamplerSpec("qmc", make, "a plugin's sampler"))

    register_plugin(Plugin())
    out = rp.replay_once(bench, sim.parse_strategy("qmc+warm", ["random", "tpe", "nsga2", "qmc"]), 200, 2, seed=7)
    assert made == [7] and out["trials"] > 0


def test_a_single_objective_plugin_sampler_is_refused_for_pareto(cli, table, register_plugin):
    import optuna

    class Plugin:
        @hookimpl
        def register_samplers(self, register):
            register(SamplerSpec("gp1", lambda seed, n: optuna.samplers.RandomSampler(seed=seed), multi_objective=False))

    register_plugin(Plugin())
    code, _, err = cli("bench", "replay", "--table", table[0], "--strategy", "gp1", "--pareto", "--budget", "10")
    assert code == 2 and "gp1 handle one objective" in err


def test_the_noise_floor_from_seeds():
    from rknas.bench import noise

    sigma, df = noise.pooled_std([[0.90, 0.92], [0.80, 0.82, 0.84], [0.5]])
    assert df == 3 and sigma == pytest.approx(((0.0002 + 0.0008) / 3) ** 0.5)
    assert noise.pooled_std([[0.9]]) == (None, 0)
    # sigma 0.3 points, delta 0.3 points: 2 * (1.96 + 0.84)^2 = 15.7 -> 16 seeds
    assert noise.seeds_needed(0.003, 0.003) == 16
    assert noise.seeds_needed(0.0015, 0.003) == 4
    assert noise.within_noise(0.002, 0.003, 2) is True  # 1.96 * 0.003 * 1 = 0.0059
    assert noise.within_noise(0.007, 0.003, 2) is False
    assert noise.within_noise(0.007, None, 2) is None and noise.within_noise(0.007, 0.003, 1) is None


def test_the_typical_spread_ignores_an_unstable_network():
    from rknas.bench import noise

    # two seeds: |a - b| / sqrt 2 per seed deviation scaled; median |a - b| = 0.02 -> 0.02 / (0.6745 * sqrt 2)
    calm = [[0.80, 0.82], [0.70, 0.72], [0.60, 0.62], [0.75, 0.77]]
    want = 1.4826 * 0.02 / 2 ** 0.5
    assert noise.typical_std(calm) == pytest.approx(want)
    wild = [*calm, [0.85, 0.20]]
    assert noise.typical_std(wild) == pytest.approx(want)
    assert noise.pooled_std(wild)[0] > 5 * want
    assert noise.unstable(wild, want) == 1 and noise.unstable(calm, want) == 0
    # three seeds: deviations from the mean scaled by sqrt(3 / 2)
    assert noise.typical_std([[0.1, 0.2, 0.3]]) == pytest.approx(1.4826 * 0.1 * 1.5 ** 0.5)
    assert noise.typical_std([[0.9]]) is None and noise.unstable([[0.9]], None) == 0
    out = noise.noise_summary(wild)
    assert out["unstable"] == 1 and out["seeds_for_delta_typical"] < out["seeds_for_delta"]


def test_the_evaluation_table_says_when_a_difference_is_inside_the_seed_spread():
    from rknas.display import evaluation_table
    from rknas.evaluate import Evaluation, ModelResult

    def model(name, accs):
        return ModelResult(name=name, source="trial", architecture="E", network={}, params=1, flops=1, seeds=[0, 1],
                           test_accuracy=accs)

    ev = Evaluation(study="s", storage="x", data={}, epochs=1, seeds=[0, 1], recipe_trial=0, recipe={},
                    models=[model("a", [0.90, 0.91]), model("b", [0.899, 0.905]), model("c", [0.80, 0.81])], out=Path("."))
    summary = ev.summary()
    vs = summary["noise"]["vs_best"]
    assert vs["a"]["difference"] == 0 and vs["b"]["within_noise"] is True and vs["c"]["within_noise"] is False
    t = evaluation_table(summary)
    cells = [str(c) for c in t.columns[-1]._cells]
    assert cells[0] == "best" and cells[1].endswith("within spread") and cells[2] == "-10.00 pts"
    assert "seeds per model" in str(t.caption)


@pytest.mark.parametrize("runs,want", [
    ({}, None),
    ({1: [0.9], 2: [0.8, 0.8]}, (2, 0.8, 2)),  # two runs (the cap) outrank one better run
    ({1: [0.9, 0.7, 0.7], 2: [0.75, 0.75]}, (1, pytest.approx(0.7667, abs=1e-4), 3)),  # runs count up to the cap only
    ({1: [0.8, 0.7], 2: [0.76, 0.76]}, (2, 0.76, 2)),  # equal runs: the better mean
    ({1: [0.8, 0.7], 2: [0.75, 0.75]}, (2, 0.75, 2)),  # equal means: fewer parameters (arch 2 has fewer)
    ({3: [0.8, 0.7], 4: [0.75, 0.75]}, (3, 0.75, 2)),  # and equal parameters: the one that completed first
])
def test_the_incumbent_rule(runs, want):
    params = {1: 5000.0, 2: 1000.0, 3: 2000.0, 4: 2000.0}
    assert regret.incumbent(runs, 2, params) == want


def test_without_racing_the_search_returns_its_best_single_run():
    done = [(1.0, 7, 0.5), (2.0, 3, 0.8), (3.0, 9, 0.8), (4.0, 3, 0.6), (5.0, 4, 0.81)]
    assert list(regret.returned(done, 1, [1.0] * 10)) == [(1.0, 7, 0.5), (2.0, 3, 0.8), (5.0, 4, 0.81)]
    # a tie goes to fewer parameters (arch 9), then to the earlier run, as the search breaks it
    fewer = [1.0] * 10
    fewer[9] = 0.5
    assert list(regret.returned(done, 1, fewer)) == [(1.0, 7, 0.5), (2.0, 3, 0.8), (3.0, 9, 0.8), (5.0, 4, 0.81)]
    # racing: arch 9 ties arch 3, which completed first and stays; arch 3's second run brings its
    # mean to 0.7, and with two runs it outranks every single run, arch 4's 0.81 included
    assert list(regret.returned(done, 2, [1.0] * 10)) == [(1.0, 7, 0.5), (2.0, 3, 0.8), (4.0, 3, pytest.approx(0.7))]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, bench_space):
    """40 architectures equal but for seed noise (sd 2 points), 4 seeds each: the best single run is luck."""
    path = tmp_path_factory.mktemp("noisy") / "noisy.db"
    make_table(path, bench_space, archs=40, seeds=4, noise=0.02)
    return tv.load_bench(path)


def test_every_trial_draws_a_seed_its_architecture_has_not_used_and_a_repeat_never_its_twin(noisy, monkeypatch):
    """The search gives each trial its own seed: a replayed trial takes one of its architecture's
    observable seeds that no complete or running trial of it has used, while one is left."""
    starts = []
    orig = sim._Simulation.start

    def spy(self, now):
        taken = {a: set(v) for a, v in self.done_seeds.items()}
        for x in self.running.values():
            taken.setdefault(x.arch, set()).add(x.seed)
        running = set(self.running)
        orig(self, now)
        for number in set(self.running) - running:  # the trial this start began
            r = self.running[number]
            starts.append((r.repeat, r.seed, taken.get(r.arch, set()), len(self.bench.curves[r.arch])))

    monkeypatch.setattr(sim._Simulation, "start", spy)
    out = rp.replay_once(noisy, sim.Strategy("random", race=2), 1e9, 2, seed=1, max_trials=60)
    assert out["repeats"] > 0 and sum(rep for rep, *_ in starts) == out["repeats"]
    assert len([1 for _, _, taken, _ in starts if taken]) > out["repeats"]  # proposals of known architectures too
    for _repeat, seed, taken, observable in starts:
        assert seed not in taken or len(taken) >= observable  # a used seed only once every one is used
    assert all(seed not in taken for repeat, seed, taken, _ in starts if repeat)  # a repeat is a new seed


def test_with_warm_start_a_repeat_waits_behind_the_warm_entries_and_keeps_its_architecture(noisy, monkeypatch):
    """Warm-start entries and repeats share the study's queue: the oldest runs first, and each
    trial is the architecture it was queued for (a repeat once took a warm entry's place)."""
    seen = []
    orig = sim._Simulation.start

    def spy(self, now):
        running = set(self.running)
        orig(self, now)
        for number in set(self.running) - running:
            r = self.running[number]
            seen.append((r.repeat, r.arch, self.snap.find({**r.ot.params})))

    monkeypatch.setattr(sim._Simulation, "start", spy)
    rp.replay_once(noisy, sim.Strategy("random", warm=True, race=2), 1e9, 2, seed=0, max_trials=30)
    assert any(rep for rep, _, _ in seen)
    assert all(arch == found for _, arch, found in seen)  # every trial ran the architecture of its parameters


@pytest.mark.slow  # +asha imports Ray's scheduler
def test_a_repeat_runs_at_full_fidelity_outside_asha(noisy, monkeypatch):
    from ray.tune.schedulers import ASHAScheduler

    seen = set()
    orig = ASHAScheduler.on_trial_add

    def spy(self, controller, trial):
        seen.add(trial.trial_id)
        return orig(self, controller, trial)

    monkeypatch.setattr(ASHAScheduler, "on_trial_add", spy)
    out = rp.replay_once(noisy, sim.Strategy("random", asha=True, race=2), 1e9, 2, seed=0, max_trials=80)
    assert out["repeats"] > 0 and out["pruned"] > 0
    assert len(seen) == out["trials"] - out["repeats"] - (1 if out["trials"] > out["completed"] + out["pruned"] else 0)


def test_racing_shrinks_the_winners_curse(noisy):
    """What a search reports for its network, against that network's mean on seeds it never saw."""
    def median_over(strategy):
        return statistics.median(rp.replay_once(noisy, strategy, 1e9, 2, seed=i, max_trials=60)["overstatement"]
                                 for i in range(15))

    plain, raced = median_over(sim.Strategy("random")), median_over(sim.Strategy("random", race=2))
    assert plain > 0.01 and raced < plain - 0.005


def test_a_racing_pareto_replay_repeats_points_that_would_join_the_front(bench):
    plain = rp.replay_once(bench, sim.Strategy("nsga2"), 1e9, 4, seed=0, pareto=True, max_trials=120)
    raced = rp.replay_once(bench, sim.Strategy("nsga2", race=2), 1e9, 4, seed=0, pareto=True, max_trials=120)
    assert plain["repeats"] == 0 and raced["repeats"] > 0
    true_hv = regret.worst_regret(bench.judged_on_unseen(0), pareto=True)
    assert all(0 <= r <= true_hv + 1e-12 for _, r in raced["events"])


def test_warm_from_another_table_starts_from_its_best_architectures(bench, table, monkeypatch):
    asked = []
    orig = tv.Snapper.find

    def spy(self, proposal):
        asked.append(self.bench.keys.get(arch_key({k: proposal[k] for k in self.bench.sampled[0] if k in proposal})))
        return orig(self, proposal)

    monkeypatch.setattr(tv.Snapper, "find", spy)
    rp.replay_once(bench, sim.Strategy("tpe", warm=True), 100, 1, seed=0, start_from=[{"table": str(table[0]), "top": 3}])
    ok = [i for i in range(bench.size) if bench.curves[i]]
    top3 = sorted(ok, key=lambda i: (-bench.truth[i], i))[:3]
    assert asked[:3] == top3


def test_warm_from_a_table_that_is_not_there_is_one_line(cli, table, tmp_path):
    code, _, err = cli("bench", "replay", "--table", table[0], "--strategy", "tpe+warm", "--budget", "10",
                       "--warm-from", tmp_path / "none.db")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--warm-from[0] (table" in err, err


def test_racing_beyond_the_tables_observable_seeds_is_one_line(cli, tmp_path, bench_space):
    path = tmp_path / "four.db"
    make_table(path, bench_space, archs=8, seeds=4)
    code, _, err = cli("bench", "replay", "--table", path, "--strategy", "random+race3", "--budget", "10", "--jobs", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "random+race3: a repeat needs a seed its architecture has not used" in err and "leaves 2 observable" in err
    code, _, err = cli("bench", "replay", "--table", path, "--strategy", "random+race2", "--budget", "10", "--jobs", "1")
    assert code == 0, err
