"""How a search driver turns SIGINT and SIGTERM into a graceful stop (no Ray: Tune's handler is faked).

The rule that matters: a signal inside a Tune round is remembered (``received``) whatever the
driver was doing, so the search reports it as interrupted. A Ctrl-C that reached Tune during a
round's last trials (the driver no longer admitting) was once taken for the round's normal end.
"""

import os
import signal

import pytest

from rknas.search.runner import _GracefulSignals


@pytest.fixture
def restored():
    saved = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield
    for n, h in saved.items():
        signal.signal(n, h)


class FakeTune:
    """What Tune's ``_setup_signal_catching`` does: its graceful stop on SIGUSR1 (and SIGINT unless disabled)."""

    def __init__(self):
        self.stops = 0
        if not int(os.getenv("TUNE_DISABLE_SIGINT_HANDLER", "0")):
            signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGUSR1, self.stop)

    def stop(self, signum, frame):
        self.stops += 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_between_rounds_a_signal_raises_keyboard_interrupt(restored, sig):
    with _GracefulSignals(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_inside_a_round_the_signal_goes_to_tunes_graceful_stop_and_is_remembered(restored, sig):
    with _GracefulSignals() as signals:
        with signals.tune() as rnd:
            tune = FakeTune()
            signal.raise_signal(sig)  # no exception: Tune winds the round down
            assert tune.stops == 1 and rnd.received
            with pytest.raises(KeyboardInterrupt):  # a second one is the user insisting
                signal.raise_signal(signal.SIGINT)
        assert signals.received


def test_a_round_without_a_signal_is_not_interrupted_and_the_next_round_starts_clean(restored):
    with _GracefulSignals() as signals:
        with signals.tune() as rnd:
            FakeTune()
            signal.raise_signal(signal.SIGINT)
        assert rnd.received
        with signals.tune() as rnd:  # a new round forgets the last one's signal ...
            assert not rnd.received
            # ... and the earlier round's Tune handler is gone: a signal before this round's
            # Tune sets up its own stops the start-up instead of reaching a finished run.
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
            assert rnd.received
        with signals.tune() as rnd:
            FakeTune()
        assert not rnd.received


def test_tune_keeps_its_hands_off_sigint_only_inside_the_round(restored, monkeypatch):
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    with _GracefulSignals() as signals:
        with signals.tune():
            assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"
            FakeTune()
            assert signal.getsignal(signal.SIGINT) == signals._in_tune  # Tune did not take SIGINT
        assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ


def test_tune_writes_no_logs_or_snapshots_nobody_reads_unless_the_user_asked(restored, monkeypatch):
    from rknas.search.runner import TUNE_ENV

    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "30")  # the user's own setting
    with _GracefulSignals() as signals:
        with signals.tune():
            assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"
            assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"
        assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ
        assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "30"
    assert set(TUNE_ENV) == {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_GLOBAL_CHECKPOINT_S"}


def test_the_previous_handlers_come_back(restored):
    def mine(signum, frame):
        pass

    signal.signal(signal.SIGINT, mine)
    signal.signal(signal.SIGTERM, mine)
    with _GracefulSignals() as signals, signals.tune():
        FakeTune()
    assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
