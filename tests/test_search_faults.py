"""Infrastructure failures are retried, architecture failures are not: a worker killed mid-trial.

The held trial (tests/support/gated.py) blocks in training until the test opens the gate, so
the kill always lands inside that trial, whatever the machine's speed. It lands once the trial
waits inside training: a kill while Tune is still setting the trial up on its (reused) actor
leaves two of Tune's calls in flight on the dead worker, and Ray 2.60 then gives up on the trial
at the second error however many retries are left (1 of 4 runs here; tune_adapter.record_error
re-runs its configuration as a new trial, and test_tune_adapter covers that path).
"""

import os
import signal
import time

import optuna
import pytest
import yaml
from gated import GOOD, HELD, SPACE  # tests/support is on sys.path
from optuna.trial import TrialState

from rknas.search.ray_env import trial_worker_pids
from rknas.search.runner import SearchOptions, run_search
from rknas.storage import TrialRecord

# This test process's Ray workers inherit its gate variable (tests/conftest.py): other test
# processes' trials (pytest-xdist) are not ours to kill.
OWN_RAY = f"RKNAS_TEST_GATE={os.environ['RKNAS_TEST_GATE']}"

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]




def test_a_killed_worker_runs_its_trial_again_and_the_record_says_so(ray_local, tmp_path, gate):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    url = f"sqlite:///{tmp_path}/f.db"
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    for params in (GOOD, HELD, GOOD):
        study.enqueue_trial(params)

    import threading

    out = {}
    thread = threading.Thread(target=lambda: out.update(result=run_search(SearchOptions(
        space=str(space_file), study="tiny", trials=3, storage=url, concurrency=1, max_retries=2))), daemon=True)
    thread.start()
    deadline = time.time() + 600  # a guard against a hang, not a timing assumption
    waiting = gate.with_name(gate.name + ".waiting")  # the held trial is inside training
    killed = None
    while killed is None and time.time() < deadline:
        trials = optuna.load_study(study_name="tiny", storage=url).trials
        if len(trials) >= 2 and trials[1].state == TrialState.RUNNING and waiting.exists():
            workers = trial_worker_pids(OWN_RAY)
            if workers:
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.2)
    assert killed is not None, "the held trial's worker was never seen"
    gate.touch()  # the trial's second attempt runs through
    thread.join(timeout=600)
    assert not thread.is_alive() and out["result"].finished == 3
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert len(trials) == 3 and [t.state for t in trials] == [TrialState.COMPLETE] * 3  # the kill cost no result
    held = TrialRecord.of(trials[1])
    assert not held.interrupted and held.attempts == 2 and len(held.retry_reasons or []) == 1
    assert len(held.val_accuracy_per_epoch) == SPACE["fidelity"]["epochs"]  # one curve, no epoch twice
    assert [TrialRecord.of(t).attempts for t in (trials[0], trials[2])] == [1, 1]


def test_an_error_inside_training_is_not_retried(ray_local, tmp_path):
    """search_broken raises inside the network: FAIL at once with its reason, one attempt."""
    space = {**SPACE, "architecture": {**SPACE["architecture"], "strategy": ["E", "search_broken"]}}
    space_file = tmp_path / "broken.yaml"
    space_file.write_text(yaml.safe_dump(space))
    url = f"sqlite:///{tmp_path}/b.db"
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    study.enqueue_trial({**HELD, "p1_strategy": "search_broken"})
    run_search(SearchOptions(space=str(space_file), study="tiny", trials=1, storage=url, concurrency=1, max_retries=2))
    (t,) = optuna.load_study(study_name="tiny", storage=url).trials
    assert t.state == TrialState.FAIL and TrialRecord.of(t).attempts == 1 and TrialRecord.of(t).fail_reason
