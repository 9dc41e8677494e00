"""--timeout: no trial starts after it, running ones finish and are recorded, exit 0, continuable.

The --timeout clock (``rknas.search.searcher.clock``) is replaced by one the test moves: the
deadline passes exactly while the gated trial runs, however fast the machine is. Meanwhile the
test plays another search whose trial stays RUNNING (with heartbeats): the run must leave it
alone, at its start and at its end.
"""

import threading
import time

import optuna
import pytest
import yaml
from gated import GOOD, HELD, SPACE  # tests/support is on sys.path
from optuna.trial import TrialState

from rknas.search import searcher as searcher_module
from rknas.storage import Heartbeats, TrialRecord, open_storage

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]



def test_timeout_stops_starting_trials_lets_running_ones_finish_and_exits_0(ray_local, cli, tmp_path, gate, monkeypatch):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    url = f"sqlite:///{tmp_path}/t.db"
    storage = open_storage(url, heartbeat_interval=1, grace_period=60)
    study = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    other = study.ask()  # trial 0: another search's, alive
    other_beats = Heartbeats(storage, interval=1)
    other_beats.add(other._trial_id)
    for params in (HELD, GOOD, GOOD):
        study.enqueue_trial(params)
    now = [0.0]
    monkeypatch.setattr(searcher_module, "clock", lambda: now[0])
    args = ["search", "--space", space_file, "--trials", "4", "--storage", url, "--study", "tiny", "--concurrency", "1",
            "--timeout", "60"]

    def release_after_the_deadline():
        deadline = time.time() + 600  # a guard against a hang, not a timing assumption
        while time.time() < deadline:
            trials = optuna.load_study(study_name="tiny", storage=url).trials
            if trials[1].state == TrialState.RUNNING:
                break
            time.sleep(0.2)
        now[0] = 61.0  # the timeout passes while trial 1 runs
        gate.touch()

    helper = threading.Thread(target=release_after_the_deadline, daemon=True)
    helper.start()
    try:
        code, out, err = cli(*args)
    finally:
        helper.join()
        other_beats.stop()
    assert code == 0, err
    assert "Stopped starting trials after --timeout 60s" in out and "run the same command again" in out
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert trials[0].state == TrialState.RUNNING and not TrialRecord.of(trials[0]).interrupted  # not this search's
    assert trials[1].state == TrialState.COMPLETE and TrialRecord.of(trials[1]).val_accuracy_per_epoch  # finished, recorded
    assert [t.state for t in trials[2:]] == [TrialState.WAITING, TrialState.WAITING]  # never started

    # The other search finishes its trial; the same command continues with a deadline of its own (61 + 60).
    study.tell(other, 0.5)
    code, out, err = cli(*args)
    assert code == 0, err
    assert "Stopped starting" not in out
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
