"""Files written whole or not at all."""

from __future__ import annotations

import os
import threading
from contextlib import suppress
from pathlib import Path


def atomic_write(path: Path, text: str, durable: bool = False) -> None:
    """Write a file whole or not at all: a temporary sibling, then os.replace; `durable`
    also syncs it to the disk first, so that it outlives a power cut."""
    # One temporary name per process and thread: callers hold the lock of the file, and a
    # name left behind by a killed process is simply overwritten next time.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:  # the folder is new, or was removed during the run
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            # No fsync: os.replace already makes the file whole-or-nothing whatever happens
            # to the process, and an fsync per completed eval would dominate small runs.
            data = memoryview(text.encode("utf-8"))
            while data:  # write() may take less than all of a large page
                data = data[os.write(fd, data) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
