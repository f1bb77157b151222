"""The OS locks of a set's state folder: the progress lock (for a read-modify-write of the
progress file) and the presence lock (which processes are running on the set)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oaievalset.errors import ProgressError


class ProgressLock:
    """An exclusive flock on one file, held for short read-modify-writes.

    A free lock is taken with one flock call; a busy one is waited for through filelock,
    with a timeout. Both lock the same file with flock, so they exclude each other, and
    other processes, whichever way each took it. (filelock's own bookkeeping costs about
    0.25 ms per acquire, more than the rest of recording an eval.)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filelock: Any = None  # a filelock.FileLock, made when first needed

    @contextmanager
    def held(self, timeout: float) -> Iterator[None]:
        fd = self._take_if_free()
        if fd is not None:
            try:
                yield
            finally:
                os.close(fd)  # the only descriptor of this open file: closing unlocks
            return
        # Imported here: only a busy lock needs it, and filelock takes a while to load.
        from filelock import FileLock, Timeout

        if self._filelock is None:
            # Only the main thread takes it: filelock's per-thread bookkeeping is not needed.
            self._filelock = FileLock(str(self.path), thread_local=False)
        try:
            with self._filelock.acquire(timeout=timeout):
                yield
        except Timeout:
            raise ProgressError(
                f"could not lock {self.path} within {timeout:.0f} s; another oaievalset "
                f"holds it: wait for it, or delete the file if none runs"
            ) from None

    def _take_if_free(self) -> int | None:
        """A descriptor holding the lock, or None if it is busy (or cannot be opened:
        filelock then waits, or reports the error)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Locked, but maybe a file that was removed meanwhile: not the lock any more.
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)
                return None
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd


class Presence:
    """A shared flock on one file for as long as a process runs on the set: others may
    join; one that finds itself alone (an exclusive lock succeeds) may tidy shared files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def join(self) -> bool:
        """Hold the file exclusively if possible; True if no other process holds it. Call
        `share()` afterwards, under the progress lock, so that others may join."""
        self.leave()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ProgressError(
                f"cannot open {self.path} ({exc.strerror}); make {self.path.parent} writable"
            ) from None
        self._fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def share(self) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def leave(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
