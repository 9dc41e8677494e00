"""The one function that decides a trial's final state, as a table; no Ray needed."""

import math

import pytest
from optuna.trial import TrialState

from rknas.search.outcome import WORKER_CRASHED
from rknas.search.searcher import trial_state
from rknas.search.space import parse_space

SINGLE = parse_space({"data": {"name": "digits"}, "fidelity": {"epochs": 3}}, "single")
MULTI = parse_space(
    {"data": {"name": "digits"}, "fidelity": {"epochs": 3},
     "objectives": [{"metric": "val_accuracy", "direction": "maximize"}, {"metric": "params", "direction": "minimize"}]},
    "multi",
)
FULL = {"epoch": 3, "val_accuracy": 0.9, "params": 1000, "flops": 5000}
DIVERGED = "training diverged at epoch 1 (mean loss nan after step 20); lower the learning rate"

CASES = [
    # (name, space, last result, Tune error, state, values, attrs)
    ("trained fully", SINGLE, FULL, False, TrialState.COMPLETE, 0.9, {}),
    ("several objectives", MULTI, FULL, False, TrialState.COMPLETE, [0.9, 1000.0], {}),
    ("stopped by ASHA at epoch 1", SINGLE, {**FULL, "epoch": 1}, False, TrialState.PRUNED, None, {"pruned_at_epoch": 1}),
    ("over a size limit", SINGLE, {"epoch": 0, "val_accuracy": 0.0, "constraint_violation": "params 9 > max_params 8"},
     False, TrialState.PRUNED, None, {"constraint_violation": "params 9 > max_params 8"}),
    ("error inside the trial", SINGLE, {"epoch": 2, "val_accuracy": 0.0, "failed": 1, "error": "PluginError: x"},
     False, TrialState.FAIL, None, {"fail_reason": "PluginError: x"}),
    ("worker died", SINGLE, {"epoch": 1, "val_accuracy": 0.5}, True, TrialState.FAIL, None, {"fail_reason": WORKER_CRASHED}),
    ("worker died before reporting", SINGLE, {}, True, TrialState.FAIL, None, {"fail_reason": WORKER_CRASHED}),
    ("error wins over a full run", SINGLE, {**FULL, "failed": 1, "error": "boom"}, False, TrialState.FAIL, None,
     {"fail_reason": "boom"}),
    ("non-finite objective", SINGLE, {**FULL, "val_accuracy": math.nan}, False, TrialState.FAIL, None,
     {"fail_reason": "non-finite val_accuracy after 3 epochs"}),
    ("diverged in epoch 1", SINGLE, {"epoch": 1, "val_accuracy": 0.0, "diverged": DIVERGED}, False, TrialState.PRUNED,
     None, {"diverged": DIVERGED}),
    ("diverged in the last epoch is not complete", SINGLE, {**FULL, "val_accuracy": 0.0, "diverged": DIVERGED}, False,
     TrialState.PRUNED, None, {"diverged": DIVERGED}),
    ("diverged, several objectives", MULTI, {**FULL, "epoch": 2, "val_accuracy": 0.0, "diverged": DIVERGED}, False,
     TrialState.PRUNED, None, {"diverged": DIVERGED}),
    ("worker died after diverging", SINGLE, {"epoch": 1, "val_accuracy": 0.0, "diverged": DIVERGED}, True,
     TrialState.FAIL, None, {"fail_reason": WORKER_CRASHED}),
]


@pytest.mark.parametrize("name,space,result,error,state,values,attrs", CASES, ids=[c[0] for c in CASES])
def test_trial_state_table(name, space, result, error, state, values, attrs):
    got_state, got_values, got_attrs = trial_state(result, error, space)
    assert got_state == state
    assert got_values == values
    assert got_attrs == attrs


def test_every_measurement_a_trial_reports_is_a_field_of_its_record():
    import dataclasses

    from rknas.search.outcome import MEASUREMENTS
    from rknas.storage import TrialRecord

    fields = {f.name for f in dataclasses.fields(TrialRecord)}
    assert set(MEASUREMENTS) <= fields, f"add {sorted(set(MEASUREMENTS) - fields)} to TrialRecord"
    assert {"params", "flops", "gpu_memory_mib"} <= set(MEASUREMENTS)


@pytest.mark.parametrize("outcome,state,attrs", [
    ("Completed", TrialState.COMPLETE, {}),
    ("Pruned", TrialState.PRUNED, {"pruned_at_epoch": 1}),
    ("OverLimit", TrialState.PRUNED, {"constraint_violation": "r"}),
    ("Diverged", TrialState.PRUNED, {"diverged": "r"}),
    ("Failed", TrialState.FAIL, {"fail_reason": "r"}),
    ("WorkerDied", TrialState.FAIL, {"fail_reason": "r"}),
])
def test_each_outcome_has_one_state(outcome, state, attrs):
    from rknas.search import outcome as o

    arg = {"Completed": [0.5], "Pruned": 1}.get(outcome, "r")
    got = o.optuna_state(getattr(o, outcome)(arg))
    assert got == (state, 0.5 if outcome == "Completed" else None, attrs)
    assert set(o.Outcome.__args__) == {o.Completed, o.Pruned, o.OverLimit, o.Diverged, o.Failed, o.WorkerDied}
