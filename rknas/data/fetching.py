"""Fetching files from URLs with a progress bar and MD5 checks (used by the built-in fetches).

A plugin's ``fetch`` may use ``fetch_files`` too: it tries each candidate URL of a file in
turn, checks the MD5 sum, and raises one ``RknasError`` line naming every URL it tried.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from pathlib import Path

from rknas.data.source import MIRROR_ENV, TIMEOUT_S
from rknas.errors import RknasError

NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)

Plan = list[tuple[list[str], str, str]]  # (candidate URLs, path under the folder, MD5) per file


def reason(exc: BaseException) -> str:
    """One line saying why ``exc`` happened (``HTTP 404 Not Found``, ``Connection refused``)."""
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _fetch(url: str, dest: Path, progress, timeout: float) -> None:
    """Copy ``url`` to ``dest``; network failures raise one of NETWORK_ERRORS."""
    request = urllib.request.Request(url, headers={"User-Agent": "rknas"})
    with urllib.request.urlopen(request, timeout=timeout) as resp, open(dest, "wb") as fh:
        length = resp.headers.get("Content-Length", "")  # file:// answers carry it too
        total = int(length) if length.isdigit() else None
        progress.start()  # only once a server answers, so a failure prints no empty bar
        task = progress.add_task(dest.name, total=total)
        got = 0
        while chunk := resp.read(1 << 16):
            fh.write(chunk)
            got += len(chunk)
            progress.update(task, advance=len(chunk))
        if total is not None and got < total:
            raise http.client.IncompleteRead(b"", total - got)


def fetch_files(
    name: str, plan: Plan, folder: Path, progress: bool = True, timeout: float = TIMEOUT_S, md5_from: str = "torchvision"
) -> list[str]:
    """Fetch and MD5-check every file of ``plan`` into ``folder``.

    Args:
        name: The data set, for messages.
        plan: (candidate URLs, path under ``folder``, MD5) per file; the first URL that serves
            the right file wins.
        folder: Where the files go.
        progress: Show a progress bar on stderr.
        timeout: Seconds to wait for a server.
        md5_from: Whose checksums these are, for the message about a wrong one.

    Returns:
        The URLs used, one per file.

    Raises:
        RknasError: No candidate URL of some file served it with the right MD5 sum.
    """
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    from torchvision.datasets.utils import calculate_md5

    used = []
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        console=Console(stderr=True), disable=not progress,
    )
    try:
        for urls, rel, md5 in plan:
            dest = folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tried, network = [], False
            for url in urls:
                try:
                    _fetch(url, dest, bar, timeout)
                except NETWORK_ERRORS as exc:
                    tried.append(f"{url}: {reason(exc)}")
                    network = True
                    continue
                actual = calculate_md5(str(dest))
                if actual != md5:
                    tried.append(f"{url}: MD5 {actual} where {md5_from} expects {md5} (corrupt or not the original file)")
                    continue
                used.append(url)
                break
            else:
                advice = "check your connection or use a" if network else "use another"
                raise RknasError(
                    f"cannot download {name} from {', nor from '.join(tried)}; "
                    f"{advice} mirror (--mirror URL or ${MIRROR_ENV})"
                )
    finally:
        if bar.live.is_started:
            bar.stop()
    return used
