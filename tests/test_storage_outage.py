"""A search rides through a storage outage: the real PostgreSQL server stopped mid-search and started again.

A gated trial (tests/support/gated.py) is running when the server stops; it finishes while the
database is away, so its result must be kept and written once the server is back. Nothing
here waits on the machine's speed: the test acts on the study's states and the gate.
"""

import threading
import time

import optuna
import pytest
import yaml
from gated import GOOD, HELD, SPACE  # tests/support is on sys.path
from optuna.trial import TrialState

from rknas.search.runner import SearchOptions, run_search
from rknas.storage import TrialRecord
from rknas.storage.retry import StorageUnavailable

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")]


def _search_in_thread(opts):
    out = {}

    def run():
        try:
            out["result"] = run_search(opts)
        except BaseException as exc:  # the test inspects it
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _wait_until_held_runs(url, gate) -> int:
    """Wait until trial 0 is COMPLETE and the held trial 1 is inside training; its Optuna trial id.

    RUNNING in the study is not enough: the driver writes the new trial's attributes and Tune
    starts its actor after that, and a server stopped in between holds the trial back with it
    (the driver waits for the database), so the held trial could never train during the outage.
    """
    waiting = gate.with_name(gate.name + ".waiting")  # the gate strategy touches it while it blocks in training
    deadline = time.time() + 600  # a guard against a hang, not a timing assumption
    while time.time() < deadline:
        try:
            trials = optuna.load_study(study_name="tiny", storage=url).trials
        except Exception:  # the search has not created the study yet
            trials = []
        if (len(trials) >= 2 and trials[0].state == TrialState.COMPLETE and trials[1].state == TrialState.RUNNING
                and waiting.exists()):
            return trials[1]._trial_id
        time.sleep(0.2)
    raise AssertionError("the held trial never started")


def _prepare(tmp_path, url):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(SPACE))
    study = optuna.create_study(study_name="tiny", storage=url, direction="maximize")
    for params in (GOOD, HELD, GOOD):
        study.enqueue_trial(params)
    return space_file


def test_a_database_restart_mid_search_loses_nothing(ray_local, postgres_server, tmp_path, gate):
    url = postgres_server.create_database()
    space_file = _prepare(tmp_path, url)
    opts = SearchOptions(space=str(space_file), study="tiny", trials=3, storage=url, concurrency=1,
                         heartbeat_interval=1, stale_after=30, storage_retry=120)
    evaluated = gate.with_name(gate.name + ".evaluated")  # the held trial touches it once it validated an epoch
    evaluated.unlink(missing_ok=True)
    thread, out = _search_in_thread(opts)
    _wait_until_held_runs(url, gate)
    postgres_server.halt()  # ends every session, like `pg_ctlcluster ... stop -m fast`
    try:
        gate.touch()  # the held trial trains on while the database is away
        deadline = time.time() + 600  # a guard against a hang, not a timing assumption
        while not evaluated.exists():
            assert time.time() < deadline, "the held trial never produced a result during the outage"
            time.sleep(0.1)
    finally:
        postgres_server.resume()
        evaluated.unlink(missing_ok=True)
    thread.join(timeout=600)
    assert not thread.is_alive() and "error" not in out, out.get("error")
    assert out["result"].finished == 3
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # none FAIL, none lost
    assert TrialRecord.of(trials[1]).val_accuracy_per_epoch  # the result that arrived during the outage


def test_an_outage_beyond_the_limit_stops_in_one_line_and_the_same_command_continues(
        ray_local, postgres_server, tmp_path, gate, cli):
    url = postgres_server.create_database()
    space_file = _prepare(tmp_path, url)
    opts = SearchOptions(space=str(space_file), study="tiny", trials=3, storage=url, concurrency=1,
                         heartbeat_interval=1, stale_after=3, storage_retry=2)
    thread, out = _search_in_thread(opts)
    _wait_until_held_runs(url, gate)
    postgres_server.halt()
    try:
        gate.touch()
        thread.join(timeout=600)
    finally:
        postgres_server.resume()
    assert isinstance(out.get("error"), StorageUnavailable), out
    message = str(out["error"])
    assert "\n" not in message and "run the same command again" in message and "unreachable" in message
    assert "127.0.0.1" in message

    args = ["search", "--space", space_file, "--study", "tiny", "--trials", "3", "--storage", url, "--concurrency", "1",
            "--heartbeat-interval", "1", "--stale-after", "3"]
    code, _, err = cli(*args)
    assert code == 0, err
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    counted = [t for t in trials if t.state.is_finished() and not TrialRecord.of(t).interrupted]
    assert len(counted) == 3 and all(t.state == TrialState.COMPLETE for t in counted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # The trial that was running when the storage went away was recovered (not counted), not lost silently.
    assert [(t.number, TrialRecord.of(t).interrupted) for t in trials if t.state == TrialState.FAIL] == [(1, True)]
