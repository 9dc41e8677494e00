"""A TCP proxy on 127.0.0.1 that cuts a database connection at a chosen point of one call.

Armed with a mode and a pattern, it waits for the next bytes from a client that contain the
pattern (``b"COMMIT"``, ``b"INSERT INTO trials "``, ...), then:

- ``before``: drops them and closes both sides: the statement never reaches the server, which
  rolls the transaction back;
- ``after``: forwards them, reads the server's whole reply (up to its ReadyForQuery message),
  and closes both sides without passing it on: a COMMIT is then applied, and the client never
  hears so;
- ``mid_reply``: forwards them, passes on the first half of the server's first answer, and
  closes both sides: the client is left reading a message that never ends.

With ``after``, the pattern counts only once client data containing ``after`` has passed
(``after=b"UPDATE trials"``: the COMMIT of the transaction that changes a trial's state, not
that of a read before it). One arming cuts once; ``cuts`` counts what was cut. Everything else is passed through byte for
byte. The PostgreSQL wire protocol frames every server message as a type byte and a length, and
ends each reply to a query with ReadyForQuery (``Z``, length 5, one status byte), which is all
``after`` needs to know.
"""

from __future__ import annotations

import random
import socket
import threading
from typing import Optional

MODES = ("before", "after", "mid_reply")


class CuttingProxy:
    """Listens on 127.0.0.1 (``port``), forwards to ``target_port``; ``arm`` cuts the next match."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._armed: Optional[tuple[str, bytes, Optional[bytes]]] = None
        self._random: Optional[tuple[str, bytes, float, random.Random]] = None
        self.cuts: list[tuple[str, bytes]] = []
        self._closing = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database_url: str) -> str:
        """``database_url`` with its port replaced by the proxy's."""
        host_port = f"127.0.0.1:{self.target[1]}"
        assert host_port in database_url, database_url
        return database_url.replace(host_port, f"127.0.0.1:{self.port}")

    def arm(self, mode: str, pattern: bytes = b"COMMIT", after: Optional[bytes] = None) -> None:
        """Cut at the next client data containing ``pattern`` (once ``after`` has passed), in ``mode`` (one of MODES)."""
        assert mode in MODES, mode
        with self._lock:
            self._armed = (mode, pattern, after)

    def cut_at_random(self, mode: str, pattern: bytes, rate: float, seed: int = 0) -> None:
        """Until ``stop_cutting``, cut each client data containing ``pattern`` with probability ``rate``."""
        assert mode in MODES, mode
        with self._lock:
            self._random = (mode, pattern, rate, random.Random(seed))

    def stop_cutting(self) -> None:
        with self._lock:
            self._random = None

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._armed is not None

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        for c in list(self._conns):
            _close(c)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            self._conns += [client, server]
            pair = _Pair(self, client, server)
            threading.Thread(target=pair.client_to_server, daemon=True).start()
            threading.Thread(target=pair.server_to_client, daemon=True).start()

    def _take(self, data: bytes) -> Optional[str]:
        """The mode to cut in, if ``data`` matches the armed pattern (disarming it)."""
        with self._lock:
            if self._random is not None and self._random[1] in data:
                mode, pattern, rate, rng = self._random
                if rng.random() < rate:
                    self.cuts.append((mode, pattern))
                    return mode
            if self._armed is None:
                return None
            mode, pattern, after = self._armed
            if after is not None:
                if after in data:
                    self._armed = (mode, pattern, None)
                return None
            if pattern in data:
                self._armed = None
                self.cuts.append((mode, pattern))
                return mode
        return None


class _Pair:
    """One client connection and its server connection."""

    def __init__(self, proxy: CuttingProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy, self.client, self.server = proxy, client, server
        self.cut_reply: Optional[str] = None  # set by the client side, acted on by the server side
        self.reply_ready = threading.Event()

    def shut(self) -> None:
        _close(self.client)
        _close(self.server)

    def client_to_server(self) -> None:
        try:
            while data := self.client.recv(65536):
                mode = self.proxy._take(data)
                if mode == "before":
                    self.shut()
                    return
                if mode is not None:
                    self.cut_reply = mode
                self.server.sendall(data)
        except OSError:
            pass
        self.shut()

    def server_to_client(self) -> None:
        held = b""
        try:
            while data := self.server.recv(65536):
                mode = self.cut_reply
                if mode == "mid_reply":
                    self.client.sendall(data[: max(1, len(data) // 2)])
                    self.shut()
                    return
                if mode == "after":
                    held += data  # swallowed: read to the reply's end, so the server has finished
                    if _ends_with_ready(held):
                        self.shut()
                        return
                    continue
                self.client.sendall(data)
        except OSError:
            pass
        self.shut()


def _ends_with_ready(data: bytes) -> bool:
    return len(data) >= 6 and data[-6:-1] == b"Z\x00\x00\x00\x05"


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
