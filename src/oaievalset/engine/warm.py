"""The warm engine: an `oaieval` that imports the engine (and the `openai` package, for a real
model) once, then forks one child per eval that oaievalset asks it for. Each eval then starts
at the cost of a fork instead of a Python start and its imports.

oaievalset starts it as this package's `oaieval` script with `OAIEVAL_WARM_SOCKET` set to a
Unix socket's descriptor (and what to import ahead). Over that socket oaievalset sends each
eval's arguments, environment and folder, with its stdin, stdout and stderr as descriptors;
this process answers with the child's pid and a pidfd for it, and with its exit code when it
has ended. The child becomes the `oaieval` a fresh process would be: the same arguments,
environment, folder and descriptors, the default Ctrl-C; it was forked ahead, while the eval
before ran (see _Engine). When the socket closes (oaievalset ended, even by kill -9) the
children left are stopped and this process exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import socket

ENV = "OAIEVAL_WARM_SOCKET"  # "FD" or "FD:openai"; engine/cli.py's WARM_ENV
PROTOCOL = 1
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL for the children left at the end
MESSAGE_MAX = 1 << 20  # bytes of one request: arguments and environment


def serve(spec: str) -> list[str]:
    """Serve until the socket closes (then exit); in a forked child, return the arguments
    of its eval, for `main` to run as if they came from the command line."""
    import socket

    fd, _, preload = spec.partition(":")
    control = socket.socket(fileno=int(fd))
    # Ctrl-C at the terminal reaches every eval; this process goes when oaievalset says.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import gc

    names = [name for name in preload.split(",") if name]
    # What is imported lives as long as the process: collections while it is made find
    # nothing, and cost an eighth of the import of `openai`.
    gc.disable()
    _preload(names)
    gc.freeze()  # what is imported stays shared with the children, untouched by collections
    gc.enable()
    engine = _Engine(control, rehearse="openai" in names)
    if not _send(control, {"ready": PROTOCOL}):
        exit_now(0)
    return engine.run()


class _Spare:
    """A child forked ahead of the next eval, that waits for it on a socket of its own."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.pid, self.pidfd, self.socket = pid, pidfd, sock

    def take(self, message: bytes, fds: list[int]) -> bool:
        """Hand it an eval's request; False if it cannot take it (it has ended)."""
        import socket

        try:
            socket.send_fds(self.socket, [message], fds)
        except OSError:
            return False
        finally:
            self.socket.close()
        return True

    def drop(self) -> None:
        """It will run no eval: it goes (killed, as nothing in it is an eval's yet)."""
        self.socket.close()
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self.pidfd)


class _Engine:
    """The warm engine's loop: requests from oaievalset in, one child per eval out, and
    one spare child forked ahead, so that an eval starts without waiting for a fork. With
    `rehearse` (a real model), the spare first runs a request through the `openai`
    client with no network, so that what the eval's first request touches is its own
    memory already rather than the engine's shared pages (their copies cost more than the
    request itself)."""

    def __init__(self, control: socket.socket, rehearse: bool) -> None:
        import selectors

        self.control = control
        self.rehearse = rehearse
        self.children: dict[int, int] = {}  # pidfd -> pid
        self.spare: _Spare | None = None
        self.spares = True  # False once a spare could not be forked
        self.watch = selectors.DefaultSelector()
        self.watch.register(control, selectors.EVENT_READ)

    def run(self) -> list[str]:
        """Serve; in a child, return its eval's arguments."""
        import socket

        while True:
            if self.spare is None and self.spares:
                argv = self._fork_spare()
                if argv is not None:
                    return argv
            for key, _ in self.watch.select():
                if key.fileobj is self.control:
                    try:
                        message, fds, _, _ = socket.recv_fds(self.control, MESSAGE_MAX, 3)
                    except OSError:
                        message, fds = b"", []
                    if not message:  # oaievalset is gone
                        self.stop()
                    argv = self._start(message, fds)
                    if argv is not None:
                        return argv
                else:
                    self._reap(key.fd)

    def _start(self, message: bytes, fds: list[int]) -> list[str] | None:
        """Start the eval a request asks for, in the spare if there is one; in a child,
        its arguments; here, None."""
        import selectors

        try:
            argv, env, cwd = _read_request(message)
            if len(fds) != 3:
                raise ValueError("a request brings stdin, stdout and stderr")
        except (ValueError, KeyError, TypeError) as exc:
            self._failed(exc, fds)
            return None
        spare, self.spare = self.spare, None
        if spare is not None and spare.take(message, fds):
            pid, pidfd = spare.pid, spare.pidfd
        else:
            if spare is not None:
                spare.drop()
            try:
                pid = os.fork()
            except OSError as exc:
                self._failed(exc, fds)
                return None
            if pid == 0:
                self._leave()
                _become(argv, env, cwd, fds)
                return argv[1:]
            pidfd = os.pidfd_open(pid)
        for each in fds:
            os.close(each)
        self.children[pidfd] = pid
        self.watch.register(pidfd, selectors.EVENT_READ)
        if not _send(self.control, {"started": pid}, pidfd):
            self.stop()
        return None

    def _failed(self, exc: Exception, fds: list[int]) -> None:
        for each in fds:
            os.close(each)
        _send(self.control, {"failed": str(exc)})

    def _fork_spare(self) -> list[str] | None:
        """Fork the spare; in it, once it is given an eval, that eval's arguments."""
        import socket

        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            self.spares = False  # evals are forked when they come instead
            return None
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            self.spares = False
            return None
        if pid == 0:
            ours.close()
            self._leave()
            return _wait_for_eval(theirs, self.rehearse)
        theirs.close()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # out of descriptors: the spare reads the hang-up and exits
            ours.close()
            os.waitpid(pid, 0)
            self.spares = False
            return None
        self.spare = _Spare(pid, pidfd, ours)
        return None

    def _leave(self) -> None:
        """In a child: let go of what is the engine's (a child is only ever forked while
        there is no spare: a spare's socket is the engine's alone)."""
        self.watch.close()
        self.control.close()
        for pidfd in self.children:
            os.close(pidfd)

    def _reap(self, pidfd: int) -> None:
        pid = self.children.pop(pidfd)
        self.watch.unregister(pidfd)
        _, status = os.waitpid(pid, 0)
        os.close(pidfd)
        if not _send(self.control, {"ended": pid, "code": os.waitstatus_to_exitcode(status)}):
            self.stop()

    def stop(self) -> NoReturn:
        """oaievalset is gone: so are the spare and the evals (see _stop); then this."""
        if self.spare is not None:
            self.spare.drop()
        _stop(self.children)
        exit_now(0)


def _wait_for_eval(control: socket.socket, rehearse: bool) -> list[str]:
    """In the spare: rehearse, then wait for an eval and become its process; exit if the
    engine goes first."""
    import socket

    # Ctrl-C stops it while it is not an eval yet, or one that has not begun (it may be
    # handed its eval while it rehearses); an eval gets the default handler in _become.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if rehearse:
        with contextlib.suppress(Exception):  # a rehearsal that fails costs time, nothing else
            _ask_once()
    try:
        message, fds, _, _ = socket.recv_fds(control, MESSAGE_MAX, 3)
    except OSError:
        message = b""
    if not message:
        os._exit(0)
    control.close()
    argv, env, cwd = _read_request(message)  # read by the engine already: it is sound
    _become(argv, env, cwd, fds)
    return argv[1:]


def _read_request(message: bytes) -> tuple[list[str], dict[str, str], str]:
    """An eval's arguments, environment and folder, from oaievalset's request."""
    request = json.loads(message)
    return list(request["argv"]), dict(request["env"]), str(request["cwd"])


def _become(argv: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> None:
    """In the child: the descriptors, environment, folder and signals of a fresh oaieval."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        if fd > 2:
            os.close(fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = argv


def exit_now(code: int) -> NoReturn:
    """End a child, or the engine: what a normal exit runs at its end (the atexit
    functions, logging's flush among them; the stdio flushed), without tearing down every
    module one by one, which takes a tenth of a second once `openai` is imported (and
    oaievalset waits for the engine's exit). The eval's threads are daemons, which a
    normal exit would not wait for either."""
    import atexit

    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(code)


def _send(control: socket.socket, message: dict[str, Any], fd: int | None = None) -> bool:
    """One message to oaievalset; False when it is gone."""
    import socket

    data = json.dumps(message).encode()
    try:
        if fd is None:
            control.send(data)
        else:
            socket.send_fds(control, [data], [fd])
    except OSError:
        return False
    return True


def _stop(children: dict[int, int]) -> None:
    """oaievalset is gone: its evals go too (SIGTERM, then SIGKILL after a grace period)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pidfd in children:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, sig)
        deadline = time.monotonic() + STOP_GRACE
        while sig == signal.SIGTERM and children and time.monotonic() < deadline:
            for pidfd, pid in list(children.items()):
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        continue
                os.close(pidfd)
                del children[pidfd]
            time.sleep(0.05)


def _preload(names: list[str]) -> None:
    """Import ahead what every eval imports, and `openai` when asked (a real model)."""
    import shutil  # noqa: F401  # by argparse, for the width of its help, in every parser

    import oaievalset.engine.answers
    import oaievalset.engine.batch  # where the eval asks whether it runs in batch mode
    import oaievalset.engine.completions
    import oaievalset.engine.evals
    import oaievalset.engine.modelgraded
    import oaievalset.engine.recorder
    import oaievalset.engine.spend
    import oaievalset.registry
    import oaievalset.version
    import oaievalset.yamlio  # noqa: F401

    with contextlib.suppress(Exception):
        import yaml  # noqa: F401  # imported by the registry where it reads a file

    if "openai" in names:
        import encodings.idna  # noqa: F401  # by the socket module, for every host name

        with contextlib.suppress(Exception):  # a warm-up that fails costs time, nothing else
            _first_request()


# An answer as the chat completions API gives it, for the warm-up's request.
_ANSWER = {
    "id": "warm",
    "object": "chat.completion",
    "created": 0,
    "model": "warm",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ""}}
    ],
    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
}


def _first_request() -> None:
    """What the `openai` package builds at its first request (its request and response
    types, their validators) built here once; and the HTTP client the package would make for
    the eval's first client, its TLS settings loaded (tens of milliseconds), for the child
    to take."""
    from oaievalset.engine.openaipkg import defer_types

    defer_types()
    import openai

    _ask_once()
    global _http_client
    _http_client = (_client_environment(), openai.DefaultHttpxClient())


def _ask_once() -> None:
    """One request through the `openai` package's client, answered by a transport in this
    process: no socket, no thread."""
    import openai

    # The package's HTTP client is httpx's (or a fork's): its module has the mock transport.
    base = next(c for c in type.mro(openai.DefaultHttpxClient) if c.__name__ == "Client")
    http = sys.modules[base.__module__.partition(".")[0]]
    transport = http.MockTransport(lambda request: http.Response(200, json=_ANSWER))
    client = openai.OpenAI(
        api_key="warm",
        base_url="http://warm.invalid/v1",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(transport=transport),
    )
    answer = client.chat.completions.create(
        model="warm", messages=[{"role": "user", "content": "warm"}]
    )
    answer.model_dump(mode="json")
    if answer.usage is not None:
        answer.usage.model_dump(mode="json")
    client.close()


# Made ahead in the engine, taken by the first client of a child: (what it was made from,
# the client). The package's own default, so the requests are the same as without it.
_http_client: tuple[tuple[str | None, ...], Any] | None = None

# What the HTTP client reads from the environment when it is made.
_CLIENT_ENVIRONMENT = (
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
    "all_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR", "SSLKEYLOGFILE",
)  # fmt: skip


def _client_environment() -> tuple[str | None, ...]:
    return tuple(os.environ.get(name) for name in _CLIENT_ENVIRONMENT)


def take_http_client() -> Any:
    """The HTTP client made ahead for this child's first `openai` client, if its environment
    would make the same one; None otherwise (the package then makes its own)."""
    global _http_client
    made, _http_client = _http_client, None
    if made is None or made[0] != _client_environment():
        return None
    return made[1]
