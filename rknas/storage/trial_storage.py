"""Where Tune keeps trial checkpoints: a place every Ray node that runs trials can reach.

Tune persists a trial's checkpoint under ``RunConfig(storage_path)`` from the node the trial
runs on, and a retried trial reads it back on whichever node it lands (since Ray 2.7 nothing
is copied to the head node). On one machine a local folder does; on several machines it must
be a folder every node shares (NFS) or a URI Tune opens through pyarrow (``s3://``, ``gs://``,
...). ``TrialStorage.check_nodes`` proves that before any trial starts: the driver writes a
marker file, and a task on every node that can run a trial looks for it. Without the check
every trial placed on another machine fails at its first epoch with Tune's own error.

Pyarrow and Ray are imported only when a search opens the storage.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from rknas.errors import ConfigError, RknasError

TRIAL_STORAGE_ENV = "RKNAS_TRIAL_STORAGE"
FLAG = "--trial-storage"
# URI schemes pyarrow's FileSystem.from_uri (what Tune calls) opens; anything else fails there.
SCHEMES = ("file", "local", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
CHECK_TIMEOUT_S = 120.0  # a node that cannot start a zero-CPU task in this long is reported as such
HOW = (f"give {FLAG} (or {TRIAL_STORAGE_ENV}) a folder every node mounts (NFS) or a URI such as "
       "s3://bucket/rknas or gs://bucket/rknas")


def default_trial_storage() -> str:
    """A folder in this machine's temp dir: right for one machine, refused on several."""
    return os.path.join(tempfile.gettempdir(), f"rknas-tune-{os.getuid()}")


def trial_storage_path(value: Optional[str] = None) -> str:
    """The trial storage to use.

    Args:
        value: An explicit path or URI (``--trial-storage``), or None.

    Returns:
        ``value``, else ``$RKNAS_TRIAL_STORAGE``, else a folder in the temp dir.
    """
    return value or os.environ.get(TRIAL_STORAGE_ENV) or default_trial_storage()


def scheme_of(path: str) -> Optional[str]:
    """The URI scheme of ``path`` (lower case), or None for a plain path."""
    head, sep, _ = path.partition("://")
    return head.lower() if sep and head and head.replace("+", "").replace("-", "").replace(".", "").isalnum() else None


def check_scheme(path: str) -> str:
    """``path`` unchanged when Tune can open its scheme.

    Raises:
        ValueError: An unknown scheme (said in the words an options error uses).
    """
    scheme = scheme_of(path)
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"cannot be opened by Ray Tune: scheme {scheme}:// is not one of "
                         f"{', '.join(s + '://' for s in SCHEMES)} (or give a plain folder)")
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


@dataclass
class TrialStorage:
    """An opened trial storage.

    Attributes:
        path: What the user gave (or the default), absolute for a plain folder.
        filesystem: The pyarrow filesystem Tune writes through.
        fs_path: The path on that filesystem.
        custom: The filesystem came from the caller (Tune then takes ``fs_path`` as is).
    """

    path: str
    filesystem: Any
    fs_path: str
    custom: bool = False

    @classmethod
    def open(cls, path: Optional[str] = None, filesystem: Any = None) -> TrialStorage:
        """Open (and create) the trial storage, the way Tune will.

        Args:
            path: ``--trial-storage`` (None: ``$RKNAS_TRIAL_STORAGE`` or the default folder).
            filesystem: A pyarrow filesystem (an S3-compatible endpoint, say); ``path`` is then
                a path on it.

        Returns:
            The storage, its folder created.

        Raises:
            ConfigError: It cannot be opened or written, in one line naming the option.
        """
        import pyarrow.fs

        given = FLAG if path else TRIAL_STORAGE_ENV if os.environ.get(TRIAL_STORAGE_ENV) else "the default trial storage"
        path = trial_storage_path(path)
        if scheme_of(path) is None and filesystem is None:
            path = os.path.abspath(os.path.expanduser(path))
        try:
            check_scheme(path)
            if filesystem is not None:
                fs, fs_path = filesystem, path
            else:
                fs, fs_path = pyarrow.fs.FileSystem.from_uri(path)
            fs.create_dir(fs_path, recursive=True)
        except Exception as exc:  # pyarrow raises its own types (ArrowInvalid, OSError, ...)
            raise ConfigError(f"{given} {path}: cannot open it: {_first_line(exc)}") from None
        return cls(path=path, filesystem=fs, fs_path=fs_path, custom=filesystem is not None)

    def tune_kwargs(self) -> dict[str, Any]:
        """``RunConfig``'s ``storage_path`` (and ``storage_filesystem`` when one was given)."""
        if self.custom:
            return {"storage_path": self.fs_path, "storage_filesystem": self.filesystem}
        return {"storage_path": self.path}

    def remove(self, name: str) -> None:
        """Delete one experiment's folder (a finished Tune round: rknas never restores from it)."""
        try:
            self.filesystem.delete_dir(f"{self.fs_path.rstrip('/')}/{name}")
        except OSError:  # pyarrow IO errors are OSErrors; gone already, or the storage is away: nothing is lost
            pass

    def check_nodes(self, cpus_per_trial: float, gpus_per_trial: float, timeout: float = CHECK_TIMEOUT_S) -> int:
        """Prove that every node of the Ray cluster that can run a trial sees this storage.

        Only needed on a cluster of several nodes; call it after joining the cluster.

        Args:
            cpus_per_trial: A trial's CPUs (nodes with fewer run no trial and are not asked).
            gpus_per_trial: A trial's GPUs (likewise).
            timeout: Seconds to wait for the nodes' answers.

        Returns:
            The number of nodes checked (0 on a single-node cluster: nothing to prove). A node
            that left the cluster after it was listed (its check cannot be scheduled) is skipped.

        Raises:
            RknasError: A node cannot see it, or did not answer, in one line naming the option.
        """
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) < 2:
            return 0
        able = [n for n in alive if n["Resources"].get("CPU", 0) >= cpus_per_trial
                and n["Resources"].get("GPU", 0) >= gpus_per_trial]
        marker = f"{self.fs_path.rstrip('/')}/.rknas-reach-{uuid.uuid4().hex}"
        try:
            with self.filesystem.open_output_stream(marker) as f:
                f.write(b"rknas")
        except Exception as exc:  # pyarrow's many error types
            raise ConfigError(f"{FLAG} {self.path}: cannot write to it: {_first_line(exc)}") from None
        try:
            look = ray.remote(num_cpus=0, max_retries=0)(_sees)
            refs = {look.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(self.filesystem, marker): n for n in able}
            ready, _late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
            checked = 0
            for ref, node in refs.items():
                where = f"Ray node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
                if ref not in ready:
                    raise RknasError(f"{where} did not answer within {timeout:g} s whether it sees the trial storage "
                                     f"{self.path}; check that the node is healthy, or remove it from the cluster")
                try:
                    seen, error = ray.get(ref)
                except ray.exceptions.TaskUnschedulableError:
                    continue  # the node left the cluster after it was listed (lost, replaced): it runs no trial
                checked += 1
                if not seen:
                    why = f" ({error})" if error else ""
                    local = " (a folder on this machine only)" if scheme_of(self.path) in (None, "file", "local") else ""
                    raise RknasError(f"{where} cannot see the trial storage {self.path}{local}{why}: trials that run "
                                     f"there could not save or restore their checkpoints; {HOW}")
        finally:
            try:
                self.filesystem.delete_file(marker)
            except OSError:  # pyarrow IO errors are OSErrors; best effort: a stray marker harms nothing
                pass
        return checked


def _sees(filesystem: Any, marker: str) -> tuple[bool, str]:
    """On a node: whether the marker the driver wrote is there (and why not, when an error says)."""
    import pyarrow.fs

    try:
        return filesystem.get_file_info(marker).type != pyarrow.fs.FileType.NotFound, ""
    except Exception as exc:  # e.g. no credentials for the bucket on that node
        return False, _first_line(exc)


__all__ = ["TRIAL_STORAGE_ENV", "TrialStorage", "check_scheme", "default_trial_storage", "scheme_of",
           "trial_storage_path"]
