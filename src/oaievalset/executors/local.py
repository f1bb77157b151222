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

WARM_SWITCH = "OAIEVALSET_WARM"  # "0": each eval of our oaieval a fresh process
WARM_READY_WAIT = 30.0  # seconds for the warm engine's imports, on a busy machine
WARM_REPLY_WAIT = 10.0  # seconds for it to fork a child, after which evals start fresh
WARM_CLOSE_WAIT = 5.0  # seconds for it to exit once let go (it stops what it has left)


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


def _inherited_stdin() -> int:
    """Our stdin for an eval that runs in the foreground, or /dev/null if we have none."""
    try:
        os.fstat(0)
    except OSError:
        return os.open(os.devnull, os.O_RDONLY)
    return 0


class _Child:
    """A running child: its process, log, and the pipe its stderr comes through."""

    where: str | None = None  # here

    def __init__(self, proc: subprocess.Popen[bytes], log: int, echo: IO[bytes] | None) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.log = log  # a descriptor, opened for appending
        self.echo = echo
        self.stderr = proc.stderr.fileno() if proc.stderr is not None else None

    def terminate(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def exit_code(self) -> int:
        """Its exit code, once it has ended (Popen's: negative for a signal)."""
        return self.proc.wait()

    def has_ended(self) -> bool:
        return self.proc.poll() is not None

    def close_stderr(self) -> None:
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def copy_stderr(self) -> bool:
        """Copy what the stderr pipe holds to the sinks; False at end of file."""
        assert self.stderr is not None
        while True:
            try:
                chunk = os.read(self.stderr, 65536)
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


class _WarmChild(_Child):
    """A child that the warm engine forked: signalled through its pidfd (never another
    process that took its pid), its exit code told by the engine."""

    def __init__(
        self, pid: int, pidfd: int, log: int, echo: IO[bytes] | None, stderr: int | None
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.log = log
        self.echo = echo
        self.stderr = stderr
        self.code: int | None = None

    def _signal(self, sig: int) -> None:
        import signal

        if self.code is None:
            with contextlib.suppress(OSError):  # it has ended, and the engine will say so
                signal.pidfd_send_signal(self.pidfd, sig)

    def terminate(self) -> None:
        import signal

        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        import signal

        self._signal(signal.SIGKILL)

    def exit_code(self) -> int:
        assert self.code is not None
        return self.code

    def has_ended(self) -> bool:
        return self.code is not None

    def close_stderr(self) -> None:
        if self.stderr is not None:
            with contextlib.suppress(OSError):
                os.close(self.stderr)
        with contextlib.suppress(OSError):
            os.close(self.pidfd)


class _WarmEngine:
    """This package's oaieval started once for the run: it has imported the engine and forks
    a child per eval (engine/warm.py). Whatever goes wrong with it, evals start as fresh
    processes instead, as they would without it."""

    def __init__(self, executable: str, preload: str) -> None:
        import socket
        import subprocess

        from oaievalset.engine.warm import ENV

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control = ours
        self.ready = False
        self.usable = True  # for new evals; those it started are still told of when it is not
        self.gone = False
        self.ended: list[tuple[int, int]] = []  # (pid, exit code), told while starting another
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [executable],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={**os.environ, ENV: f"{theirs.fileno()}:{preload}"},
            )
        except OSError:
            self.proc = None
            self.usable, self.gone = False, True
        theirs.close()

    def _receive(self, timeout: float) -> tuple[dict[str, Any], list[int]] | None:
        """The engine's next message, or None if it said nothing within `timeout`; raises
        _Gone when it has ended (or speaks another protocol)."""
        import json
        import socket

        self.control.settimeout(timeout)
        try:
            data, fds, _, _ = socket.recv_fds(self.control, 65536, 1)
        except (BlockingIOError, socket.timeout):
            return None
        except OSError:
            raise _Gone from None
        if not data:
            raise _Gone
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            for fd in fds:
                os.close(fd)
            raise _Gone
        if "ended" in message:
            self.ended.append((int(message["ended"]), int(message["code"])))
        return message, fds

    def start(self, argv: list[str], env: dict[str, str], fds: list[int]) -> tuple[int, int] | None:
        """Fork an eval's child: (pid, pidfd), or None if the engine cannot (it is then not
        asked again)."""
        import json
        import socket

        from oaievalset.engine.warm import PROTOCOL

        if not self.usable:
            return None
        try:
            if not self.ready:
                got = self._receive(WARM_READY_WAIT)
                if got is None or got[0].get("ready") != PROTOCOL:  # another version's oaieval
                    raise _Gone
                self.ready = True
            request = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()}).encode()
            try:
                socket.send_fds(self.control, [request], fds)
            except OSError:  # an environment too large for one message, or the engine gone
                self.usable = False
                return None
            while True:
                got = self._receive(WARM_REPLY_WAIT)
                if got is None:  # stuck: its children are still told of, if ever
                    self.usable = False
                    return None
                message, passed = got
                if "started" in message and len(passed) == 1:
                    return int(message["started"]), passed[0]
                for fd in passed:
                    os.close(fd)
                if "failed" in message:  # it could not fork: a fresh process may
                    return None
        except _Gone:
            self.usable, self.gone = False, True
            return None

    def take_ended(self) -> list[tuple[int, int]]:
        """The children that ended, as the engine has told (`gone` says if it has ended)."""
        try:
            while not self.gone:
                got = self._receive(0)
                if got is None:
                    break
                for fd in got[1]:
                    os.close(fd)
        except _Gone:
            self.usable, self.gone = False, True
        ended, self.ended = self.ended, []
        return ended

    def close(self) -> None:
        """Let it go: it stops whatever children it has left, and exits."""
        import subprocess

        with contextlib.suppress(OSError):
            self.control.close()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=WARM_CLOSE_WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _Gone(Exception):
    """The warm engine has ended."""


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
        # Our oaieval's evals are forked from a warm engine, one per executable.
        self._warm_wanted = self._pidfds and os.environ.get(WARM_SWITCH, "1") != "0"
        self._engines: dict[str, _WarmEngine | None] = {}
        self._forked: dict[int, tuple[_WarmEngine, _WarmChild]] = {}  # by pid

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
        executable = self._executable(command[0])
        forked = self._fork(executable, spec, log) if self._warm_wanted else None
        if forked is not None:
            return forked
        try:
            proc = subprocess.Popen(
                list(command),
                executable=executable,
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
        if child.stderr is not None:
            os.set_blocking(child.stderr, False)
            self._selector.register(child.stderr, selectors.EVENT_READ, (child, "stderr"))
        if self._pidfds:
            try:
                pidfd = os.pidfd_open(proc.pid)
            except OSError:  # an old kernel: wait in a thread instead
                self._pidfds = self._warm_wanted = False
            else:
                self._selector.register(pidfd, selectors.EVENT_READ, (child, "exit"))
                return child
        threading.Thread(target=self._wait_in_thread, args=(child,), daemon=True).start()
        return child

    def _engine(self, executable: str, model: str) -> _WarmEngine | None:
        """The warm engine for our oaieval at `executable`, started at its first eval; None
        for another oaieval, which is run as it is."""
        import selectors

        from oaievalset.engine.cli import is_this_oaieval

        if executable not in self._engines:
            engine = None
            if is_this_oaieval(executable):
                offline = all(name == "dummy" for name in model.split(","))
                engine = _WarmEngine(executable, "" if offline else "openai")
                self._selector.register(engine.control, selectors.EVENT_READ, (engine, "warm"))
            self._engines[executable] = engine
        engine = self._engines[executable]
        return engine if engine is not None and engine.usable else None

    def _fork(self, executable: str, spec: JobSpec, log: int) -> _WarmChild | None:
        """The eval forked from the warm engine, with the descriptors, environment and folder
        a fresh process would have; None when it cannot be (then it starts fresh)."""
        import selectors

        engine = self._engine(executable, spec.command[1] if len(spec.command) > 1 else "")
        if engine is None:
            return None
        if spec.echo_stderr:
            stdin = _inherited_stdin()
            stderr_r, stderr_w = os.pipe()
        else:
            stdin, stderr_r, stderr_w = os.open(os.devnull, os.O_RDONLY), None, log
        env = {**os.environ, **(spec.env or {})}
        try:
            started = engine.start([executable, *spec.command[1:]], env, [stdin, log, stderr_w])
        finally:  # the child has its own copies now
            for fd in {stdin, stderr_w} - {0, log}:
                os.close(fd)
        if started is None:
            if stderr_r is not None:
                os.close(stderr_r)
            return None
        pid, pidfd = started
        self._guardian.tell(pid)
        child = _WarmChild(pid, pidfd, log, getattr(sys.stderr, "buffer", None), stderr_r)
        self._children.add(child)
        self._forked[pid] = (engine, child)
        if stderr_r is not None:
            os.set_blocking(stderr_r, False)
            self._selector.register(stderr_r, selectors.EVENT_READ, (child, "stderr"))
        return child

    def _wait_in_thread(self, child: _Child) -> None:
        child.exit_code()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def wait(self, timeout: float | None) -> list[Ended]:
        ended: list[Ended] = []
        told = [e for e in self._engines.values() if e is not None and e.ended]
        for key, _ in self._selector.select(0 if told else timeout):
            if key.data is None:  # a waiting thread saw a child end
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                for child in list(self._children):
                    if not isinstance(child, _WarmChild) and child.has_ended():
                        ended.append(Ended(child, self._reap(child)))
                continue
            if key.data[1] == "warm":
                told.append(key.data[0])
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
        for engine in dict.fromkeys(told):
            ended += self._ended_from(engine)
        return ended

    def _ended_from(self, engine: _WarmEngine) -> list[Ended]:
        """The evals the warm engine says have ended; all of its evals, if it has ended."""
        import signal

        ended = []
        for pid, code in engine.take_ended():
            _, child = self._forked.pop(pid, (None, None))
            if child is not None and child in self._children:
                child.code = code
                ended.append(Ended(child, self._reap(child)))
        if engine.gone:
            self._selector.unregister(engine.control)
            for pid, (owner, child) in list(self._forked.items()):
                if owner is engine:  # nobody can say how it ended: stopped for certain
                    child.kill()
                    child.code = -signal.SIGKILL
                    del self._forked[pid]
                    reason = "the warm engine that started it ended"
                    ended.append(Ended(child, self._reap(child), reason=reason))
        return ended

    def _reap(self, child: _Child) -> int:
        """The exit code of an ended child, after copying the rest of its stderr."""
        code = child.exit_code()
        self._children.discard(child)
        if child.stderr is not None:
            # What the child wrote before it ended; a grandchild that keeps the pipe open
            # does not hold up the eval.
            child.copy_stderr()
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(child.stderr)
        child.close_stderr()
        os.close(child.log)
        self._guardian.tell(-child.pid)
        return code

    def close(self) -> None:
        """Let the guardian go and release the descriptors; call when no child runs any more
        (the Python API may run many sets in one process)."""
        for engine in self._engines.values():
            if engine is not None:
                engine.close()
        self._guardian.close()
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
