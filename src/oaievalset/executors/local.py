"""The local backend: each eval a child process of this one, watched from the main thread
with a selector (no thread per child), and stopped by a guardian if we die."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from oaievalset.errors import LaunchError
from oaievalset.executors.base import (
    STOP_GRACE,
    Defaults,
    Ended,
    JobSpec,
    find_executable,
    not_found,
)

if TYPE_CHECKING:
    import argparse
    import subprocess
    from pathlib import Path

    from oaievalset.executors.base import Job

# Every run parses the flags of every backend, so backend modules import what they run with
# (subprocess, selectors, threading) where they use it: `oaievalset --help` stays fast.

NAME = "local"
DESCRIPTION = "local processes (the default)"


class Options(NamedTuple):
    """The local backend takes no options."""


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """No flags of its own."""


def options(values: Mapping[str, Any]) -> Options:
    return Options()


def create(options: Options, state_dir: Path) -> SubprocessExecutor:
    return SubprocessExecutor()


# The guardian: a small process that outlives oaievalset only to stop its children.
# oaievalset tells it each child's pid when it starts and when it has been reaped; if
# oaievalset dies (even by kill -9) the guardian sees its pipe hang up and stops the children
# still listed, so that no eval keeps running as an orphan. (A parent-death signal set in
# the child would need preexec_fn, which makes every spawn several times slower.)
# The guardian polls for the hang-up only, and reads what it was told a few times a second:
# a wake-up per message would cost every eval a context switch.
_GUARDIAN = """
import os, select, signal, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
os.set_blocking(0, False)
pids, rest, ended = set(), b"", False
watch = select.poll()
watch.register(0, 0)  # no events asked: woken by the hang-up alone
while not ended:
    watch.poll(%(drain_ms)d)
    while True:
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            break
        if not chunk:
            ended = True
            break
        rest += chunk
    *lines, rest = rest.split(b"\\n")
    for line in lines:
        pid = int(line)
        if pid > 0:
            pids.add(pid)
        else:
            pids.discard(-pid)
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    if not pids or sig == signal.SIGKILL:
        break
    time.sleep(%(grace)s)
"""
GUARDIAN_DRAIN_MS = 250  # the pipe holds thousands of messages; a full one only delays us


class _Guardian:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def tell(self, pid: int) -> None:
        import subprocess

        if self._proc is None:
            script = _GUARDIAN % {"drain_ms": GUARDIAN_DRAIN_MS, "grace": STOP_GRACE}
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", script],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            # One write of a few bytes: all or nothing on a pipe.
            os.write(self._proc.stdin.fileno(), b"%d\n" % pid)

    def close(self) -> None:
        import subprocess

        if self._proc is not None and self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)


class _Child:
    """A running child: its process, log, and the pipe its stderr comes through."""

    where: str | None = None  # here

    def __init__(self, proc: subprocess.Popen[bytes], log: int, echo: IO[bytes] | None) -> None:
        self.proc = proc
        self.log = log  # a descriptor, opened for appending
        self.echo = echo

    def terminate(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def copy_stderr(self) -> bool:
        """Copy what the stderr pipe holds to the sinks; False at end of file."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            if self.echo is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.echo.write(chunk)
                    self.echo.flush()
            with contextlib.suppress(OSError):
                os.write(self.log, chunk)


class SubprocessExecutor(Defaults):
    """Runs commands as real child processes.

    A child's stdout goes to its log; its stderr goes to the log and, when `echo_stderr`,
    live to our stderr (the original shows stderr and throws stdout away). Endings are
    seen through a pidfd per child where Linux has them, else through a waiting thread.
    """

    def __init__(self) -> None:
        import selectors

        self._selector = selectors.DefaultSelector()
        self._guardian = _Guardian()
        self._found: dict[str, str | None] = {}  # PATH is searched once per name
        self._pidfds = hasattr(os, "pidfd_open")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._children: set[_Child] = set()

    def _executable(self, name: str) -> str:
        if name not in self._found:
            self._found[name] = find_executable(name)
        return self._found[name] or name

    def start(self, spec: JobSpec) -> Job:
        import selectors
        import subprocess
        import threading

        command, echo_stderr = spec.command, spec.echo_stderr
        # A bare descriptor (closed when the child is reaped): the child writes to it
        # directly, and so do we for its stderr, appending.
        log = os.open(spec.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            proc = subprocess.Popen(
                list(command),
                executable=self._executable(command[0]),
                stdout=log,
                stderr=subprocess.PIPE if echo_stderr else log,
                stdin=None if echo_stderr else subprocess.DEVNULL,
                env=None if not spec.env else {**os.environ, **spec.env},
            )
        except FileNotFoundError:
            os.close(log)
            raise not_found(command[0]) from None
        except PermissionError:
            os.close(log)
            raise LaunchError(f"'{command[0]}' is not executable; check its permissions") from None
        self._guardian.tell(proc.pid)
        child = _Child(proc, log, getattr(sys.stderr, "buffer", None))
        self._children.add(child)
        if proc.stderr is not None:
            os.set_blocking(proc.stderr.fileno(), False)
            self._selector.register(proc.stderr, selectors.EVENT_READ, (child, "stderr"))
        if self._pidfds:
            try:
                pidfd = os.pidfd_open(proc.pid)
            except OSError:  # an old kernel: wait in a thread instead
                self._pidfds = False
            else:
                self._selector.register(pidfd, selectors.EVENT_READ, (child, "exit"))
                return child
        threading.Thread(target=self._wait_in_thread, args=(child,), daemon=True).start()
        return child

    def _wait_in_thread(self, child: _Child) -> None:
        child.proc.wait()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def wait(self, timeout: float | None) -> list[Ended]:
        ended: list[Ended] = []
        for key, _ in self._selector.select(timeout):
            if key.data is None:  # a waiting thread saw a child end
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                for child in list(self._children):
                    if child.proc.poll() is not None:
                        ended.append(Ended(child, self._reap(child)))
                continue
            child, what = key.data
            if child not in self._children:  # reaped earlier in this same batch
                continue
            if what == "stderr":
                if not child.copy_stderr():
                    self._selector.unregister(key.fileobj)
            else:
                self._selector.unregister(key.fd)
                os.close(key.fd)
                ended.append(Ended(child, self._reap(child)))
        return ended

    def _reap(self, child: _Child) -> int:
        """The exit code of an ended child, after copying the rest of its stderr."""
        code = child.proc.wait()
        self._children.discard(child)
        if child.proc.stderr is not None:
            # What the child wrote before it ended; a grandchild that keeps the pipe open
            # does not hold up the eval.
            child.copy_stderr()
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(child.proc.stderr)
            child.proc.stderr.close()
        os.close(child.log)
        self._guardian.tell(-child.proc.pid)
        return code

    def close(self) -> None:
        """Let the guardian go and release the descriptors; call when no child runs any more
        (the Python API may run many sets in one process)."""
        self._guardian.close()
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
