"""An exclusive lock between processes, for a build that several runs may need at once (the feature cache of
deepart.training.feature_cache): the first to take the lock builds, the others wait and then find it built.

The lock is `flock` on a lock file (created if missing, never deleted: a deleted lock file would let two processes
lock two different files). The kernel releases it when the holding process ends, however it ends (kill -9, an
out-of-memory kill, a crash), so a dead holder never blocks the next process. The holder writes "pid <pid> on
<host>" into the file, which a waiting process reports. A file system without flock (some cluster file systems,
e.g. Lustre mounted without its flock option) raises LockError."""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from deepart.core.errors import DeepArtError, first_line


class LockError(DeepArtError):
    """The lock cannot be taken at all: the file system (or the platform) has no flock."""


def holder(path: Path) -> str:
    """Who holds the lock as the holder wrote it ("pid 123 on host"), or "" when not known (yet)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


@contextlib.contextmanager
def exclusive(path: Path, on_wait: Callable[[str], None]) -> Iterator[None]:
    """Hold the lock of `path` for the with block. When another process holds it, `on_wait(holder)` is called once
    (`holder(path)`: who holds it, or "") and the call waits until the lock is free."""
    try:
        import fcntl
    except ImportError:
        raise LockError(f"{path}: cannot lock (no fcntl.flock on this platform)") from None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                on_wait(holder(path))
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # ENOLCK, EOPNOTSUPP, ENOSYS, ...: the file system does not lock
            raise LockError(f"{path}: cannot lock ({exc.strerror or first_line(exc)})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)  # also for forked children that share the descriptor
    finally:
        os.close(fd)
