"""A process forked before a command's heavy imports, which makes them on the other core.

``rknas report`` spends most of its time importing (SQLAlchemy, matplotlib, scikit-learn) and
reading; on two cores an import that runs in a forked process while this one opens and reads
the study is off the critical path. ``ForkedWorker`` forks, runs its ``preload`` (imports, warm
caches) there, and then runs calls sent to it. This module imports only the standard library,
so the caller chooses the moment to fork.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any, Optional


def can_fork() -> bool:
    """Whether forking a worker is safe and gains: Linux, two CPUs or more, no other thread yet."""
    return (os.cpu_count() or 1) >= 2 and sys.platform.startswith("linux") and threading.active_count() == 1


class ForkedWorker:
    """A process that runs ``preload()`` at once and then the calls ``submit`` sends it, in order.

    Calls and answers are pickled: a call is a module-level function and its arguments. A call
    that raises sends its exception back, and ``result()`` raises it here. A worker that dies
    (killed, out of memory, its preload failed) makes ``result()`` raise ``EOFError``: the caller
    then does the work itself.

    Args:
        preload: A module-level function the worker runs first (imports).
        context: The multiprocessing context (default: fork).
        name: The process's name (``ps`` shows it).
    """

    def __init__(self, preload: Callable[[], Any], context: Any = None, name: str = "rknas-worker"):
        ctx = context or mp.get_context("fork")
        conn, child = ctx.Pipe()
        self._conn: Any = conn
        self._proc: Any = ctx.Process(target=_serve, args=(child, preload), daemon=True, name=name)
        self._proc.start()
        child.close()

    def submit(self, func: Callable[..., Any], *args: Any) -> bool:
        """Send a call; its answer is the next ``result()``.

        Returns:
            False (and the worker stopped) where the worker is gone.
        """
        try:
            self._conn.send((func, args))
        except OSError:  # the worker is gone (killed, out of memory)
            self.close()
            return False
        return True

    def result(self, timeout: Optional[float] = None) -> Any:
        """The answer to the oldest call not answered yet.

        Raises:
            TimeoutError: No answer within ``timeout`` seconds.
            EOFError: The worker died before answering.
            Exception: What the call raised.
        """
        if not self._conn.poll(timeout):
            raise TimeoutError(f"no answer within {timeout} s")
        raised, value = self._conn.recv()
        if raised:
            raise value
        return value

    def close(self) -> None:
        """Stop the worker (at once, if it is still preloading or running a call)."""
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
        self._conn.close()


def _serve(conn: Any, preload: Callable[[], Any]) -> None:
    """The worker: preload, then answer each call until the other end closes.

    The first call is taken as bytes on a thread while the preload runs, so the sender never
    blocks on a full socket; it is unpickled only after the preload (unpickling imports the
    classes it meets, and two threads importing one package at once can see it half
    initialized). A failed preload exits without an answer. Ctrl-C is ignored here: it is the
    command's, which stops its workers as it ends (else each worker printed a traceback).
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    first: list[bytes] = []
    reader = threading.Thread(target=_receive, args=(conn, first), daemon=True)
    reader.start()
    try:
        preload()
    except Exception:  # the caller does the work itself
        return
    reader.join()
    if not first:  # nothing was sent, or the caller is gone
        return
    message = first[0]
    while True:
        func, args = pickle.loads(message)
        try:
            answer: tuple[bool, Any] = (False, func(*args))
        except Exception as exc:  # sent back, raised there
            answer = (True, exc)
        try:
            conn.send(answer)
        except (pickle.PicklingError, TypeError, AttributeError):
            conn.send((True, RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
        try:
            message = conn.recv_bytes()
        except EOFError:
            return


def _receive(conn: Any, into: list[bytes]) -> None:
    try:
        into.append(conn.recv_bytes())
    except EOFError:
        pass
