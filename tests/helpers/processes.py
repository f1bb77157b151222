"""Real processes: start the installed `oaievalset`, wait for what they do, and read what
they recorded."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Callable

from helpers.fake import Fake, oaievalset_exe


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def start(args: list[str], env: dict[str, str], new_session: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [oaievalset_exe(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        start_new_session=new_session,
    )


def recorded_keys(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)[2] for line in path.read_text().splitlines() if line.strip()]


def started_pids(fake: Fake, key: str) -> list[int]:
    return [int(e["pid"]) for e in fake.events() if e["event"] == "start" and e["argv"][1] == key]


def drain(leader: int) -> str:
    """All that a pseudo-terminal shows until its last writer closes it."""
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


def run_on_pty(
    args: list[str], env: dict[str, str] | None = None, columns: int = 120
) -> tuple[int, str, str]:
    """Run oaievalset with stdout on a pseudo-terminal of the given width; stderr piped."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [oaievalset_exe(), *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    os.close(follower)
    screen = drain(leader)
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.wait(timeout=60)
    os.close(leader)
    return proc.returncode, screen, err
