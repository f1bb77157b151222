"""The warm engine: an `oaieval` that imports the engine (and the `openai` package, for a real
model) once, then forks one child per eval that oaievalset asks it for. Each eval then starts
at the cost of a fork instead of a Python start and its imports.

oaievalset starts it as this package's `oaieval` script with `OAIEVAL_WARM_SOCKET` set to a
Unix socket's descriptor (and what to import ahead). Over that socket oaievalset sends each
eval's arguments, environment and folder, with its stdin, stdout and stderr as descriptors;
this process answers with the child's pid and a pidfd for it, and with its exit code when it
has ended. The child becomes the `oaieval` a fresh process would be: the same arguments,
environment, folder and descriptors, the default Ctrl-C. When the socket closes (oaievalset
ended, even by kill -9) the children left are stopped and this process exits.
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
    import selectors
    import socket

    fd, _, preload = spec.partition(":")
    control = socket.socket(fileno=int(fd))
    # Ctrl-C at the terminal reaches every eval; this process goes when oaievalset says.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import gc

    # What is imported lives as long as the process: collections while it is made find
    # nothing, and cost an eighth of the import of `openai`.
    gc.disable()
    _preload([name for name in preload.split(",") if name])
    gc.freeze()  # what is imported stays shared with the children, untouched by collections
    gc.enable()
    children: dict[int, int] = {}  # pidfd -> pid
    watch = selectors.DefaultSelector()
    watch.register(control, selectors.EVENT_READ)
    if not _send(control, {"ready": PROTOCOL}):
        exit_now(0)
    while True:
        for key, _ in watch.select():
            if key.fileobj is control:
                try:
                    message, fds, _, _ = socket.recv_fds(control, MESSAGE_MAX, 3)
                except OSError:
                    message, fds = b"", []
                if not message:  # oaievalset is gone
                    _stop(children)
                    exit_now(0)
                argv = _fork(control, message, fds, children, watch)
                if argv is not None:
                    return argv
            else:
                pid = children.pop(key.fd)
                watch.unregister(key.fd)
                _, status = os.waitpid(pid, 0)
                os.close(key.fd)
                if not _send(control, {"ended": pid, "code": os.waitstatus_to_exitcode(status)}):
                    _stop(children)
                    exit_now(0)


def _fork(
    control: socket.socket,
    message: bytes,
    fds: list[int],
    children: dict[int, int],
    watch: Any,
) -> list[str] | None:
    """Fork the child a request asks for; in the child, its arguments; here, None."""
    import selectors

    try:
        request = json.loads(message)
        argv, env, cwd = list(request["argv"]), dict(request["env"]), str(request["cwd"])
        if len(fds) != 3:
            raise ValueError("a request brings stdin, stdout and stderr")
        pid = os.fork()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        for each in fds:
            os.close(each)
        _send(control, {"failed": str(exc)})
        return None
    if pid == 0:
        watch.close()
        control.close()
        for pidfd in children:
            os.close(pidfd)
        _become(argv, env, cwd, fds)
        return argv[1:]
    for each in fds:
        os.close(each)
    pidfd = os.pidfd_open(pid)
    children[pidfd] = pid
    watch.register(pidfd, selectors.EVENT_READ)
    if not _send(control, {"started": pid}, pidfd):
        _stop(children)
        exit_now(0)
    return None


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
    types, their validators) built here once: one request answered by a transport in this
    process, no socket, no thread."""
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
    # And the HTTP client the package would make for the eval's first client, its TLS
    # settings loaded (tens of milliseconds), for the child to take.
    global _http_client
    _http_client = (_client_environment(), openai.DefaultHttpxClient())


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
