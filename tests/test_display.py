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
