"""The search progress view: one line per finished trial, with what a user needs to see."""

import io

from rich.console import Console

from rknas.display import SearchProgress
from rknas.storage import TrialRecord


def lines(*events):
    out = io.StringIO()
    view = SearchProgress(Console(file=out, width=200, force_terminal=False))
    for kind, data in events:
        view(kind, data)
    view.stop()
    return out.getvalue()


START = ("start", {"study": "s", "storage": "sqlite:///x.db", "finished": 0, "target": 3, "remaining": 3,
                   "concurrency": 4, "stale": 0, "space": "tiny"})


def test_trial_lines_show_state_architecture_size_and_gpu_memory():
    net = {"strategy": ["I", "E"], "stages": [2, 1], "k": [32, 16]}
    text = lines(
        START,
        ("trial_end", {"trial_id": "a", "number": 0, "state": "COMPLETE", "values": 0.91,
                       "record": TrialRecord(network=net, params=12_300, gpu_memory_mib=512.4)}),
        ("trial_end", {"trial_id": "b", "number": 1, "state": "PRUNED", "values": None,
                       "record": TrialRecord(pruned_at_epoch=1, val_accuracy_per_epoch=[0.4])}),
        ("trial_end", {"trial_id": "c", "number": 2, "state": "FAIL", "values": None,
                       "record": TrialRecord(fail_reason="PluginError: boom")}),
    )
    assert "COMPLETE val 0.9100  I2/k32 E1/k16  12.3K params, GPU 512 MiB" in text
    assert "PRUNED stopped at epoch 1, val 0.4000" in text
    assert "FAIL PluginError: boom" in text
    assert "GPU" not in text.split("trial    1")[1]  # CPU trials show no GPU column


def test_the_start_names_the_validation_split_and_racing_shows_the_mean_behind_best():
    text = lines(
        ("start", {**START[1], "val_images": 400}),
        ("trial_end", {"trial_id": "a", "number": 0, "state": "COMPLETE", "values": 0.91, "record": TrialRecord()}),
        ("trial_repeat", {"number": 0, "repeat_of": 0, "repeat": 1}),
        ("incumbent", {"number": 0, "value": 0.9, "runs": 2}),
    )
    assert "scored on 400 validation images: accuracy moves in steps of 0.25 points" in text
    assert "a tie goes to fewer parameters, then the earlier trial" in text
    assert "trial 0's configuration (first run: trial 0) would lead; it runs again on a new seed (repeat 1)" in text
    view = SearchProgress(Console(file=io.StringIO(), width=200, force_terminal=False))
    view("incumbent", {"number": 3, "value": 0.8765, "runs": 2})
    assert view._stats().endswith("best val 0.8765 (mean of 2)")
    plain = SearchProgress(Console(file=io.StringIO(), width=200, force_terminal=False))
    plain("trial_end", {"trial_id": "a", "number": 0, "state": "COMPLETE", "values": 0.91, "record": TrialRecord()})
    assert "best val 0.9100 |" in plain._stats() and "mean of" not in plain._stats()
