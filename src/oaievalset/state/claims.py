"""Per-eval claims: which process is running which command of a set.

A claim is an OS lock (flock) on a small file per command: it vanishes with its process,
even on kill -9. These are plain non-blocking flock calls rather than filelock objects:
they are taken once per eval, and filelock's bookkeeping costs about a hundred times more
than the system call.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from oaievalset.commands import command_id


class Claims:
    """The claims of one set, in one folder; the ones this process holds, by command id."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[str, int] = {}  # command id -> descriptor holding its flock

    def _path(self, command: Sequence[str]) -> Path:
        return self.folder / f"{command_id(command)}.lock"

    def try_claim(self, command: Sequence[str]) -> bool:
        """Claim a command for this process; False if another process holds it."""
        return self._claim(command, blocking=False)

    def wait_claim(self, command: Sequence[str]) -> None:
        """Wait until no other process holds the command, then hold it."""
        self._claim(command, blocking=True)

    def _claim(self, command: Sequence[str], blocking: bool) -> bool:
        key = command_id(command)
        if key in self._held:
            return True
        fd = os.open(self._path(command), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._held[key] = fd
        return True

    def release(self, command: Sequence[str]) -> None:
        fd = self._held.pop(command_id(command), None)
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def held_elsewhere(self, commands: Sequence[Sequence[str]]) -> set[str]:
        """The ids of the commands that another process holds now (one folder listing,
        then a probe of only those that have a claim file)."""
        try:
            names = set(os.listdir(self.folder))
        except OSError:
            return set()
        return {
            command_id(command)
            for command in commands
            if f"{command_id(command)}.lock" in names and self._held_by_other(command)
        }

    def _held_by_other(self, command: Sequence[str]) -> bool:
        if command_id(command) in self._held:
            return False  # ours
        # A probe that only reads, so that `--plan` works in a folder it cannot write to
        # (flock does not need a descriptor open for writing).
        try:
            fd = os.open(self._path(command), os.O_RDONLY)
        except OSError:
            return False  # gone since the listing, or unreadable: nobody we can see
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing it releases the probe's flock
        return False

    def release_all(self) -> None:
        for fd in self._held.values():
            os.close(fd)
        self._held.clear()
