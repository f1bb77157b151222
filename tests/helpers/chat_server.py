"""A chat-completions server on loopback, for tests and benchmarks.

It answers each request from a table (the last message's content -> answer) or a function
of the request, can add a fixed latency, fail with a chosen HTTP status (always, for a while,
or for some requests), send Retry-After, and knows a fixed set of model names. It serves
the API under /v1, as OpenAI-compatible servers do, and with a BatchAPI (batch_api.py) the
Files and Batches endpoints too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helpers.batch_api import BatchAPI

DEFAULT_USAGE: dict[str, Any] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (killed on purpose) is no error to print."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@dataclass
class ChatServer:
    answers: dict[str, str] = field(default_factory=dict)
    default_answer: str = "I do not know."
    answer_fn: Callable[[dict[str, Any]], str] | None = None  # overrides the table
    latency: float = 0.0
    latency_fn: Callable[[int], float] | None = None  # by arrival number, overrides latency
    fail_status: int | None = None
    # For the first `fail_for` seconds after start(), every request fails with fail_status.
    fail_for: float | None = None
    # Which requests fail (by their arrival number, from 0), and with which status; the
    # status 0 drops the connection without an answer.
    fail_when: Callable[[int, dict[str, Any]], int | None] | None = None
    retry_after: str | None = None  # the Retry-After header sent with failures
    usage: Callable[[dict[str, Any]], Any] | None = None  # the usage of each answer
    models: tuple[str, ...] = ("test-model",)
    batch_api: BatchAPI | None = None  # the Files and Batches endpoints, if served
    requests: list[dict[str, Any]] = field(default_factory=list)  # chat requests
    failures: int = 0
    # Requests not yet answered, counted until their answer starts to be written (so a
    # client that sends one request per answer it reads never sees two), and the most at once.
    in_flight: int = 0
    most_in_flight: int = 0
    answered_before: list[int] = field(default_factory=list)  # answers begun, by arrival
    _answers: int = 0
    _server: ThreadingHTTPServer | None = None
    _started: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def root_url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> ChatServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], retry: bool = False) -> None:
                data = json.dumps(body).encode()
                self._answering()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if retry and owner.retry_after is not None:
                    self.send_header("Retry-After", owner.retry_after)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if owner.batch_api is not None and owner.batch_api.handles(self.path):
                    self._batch_api("GET", b"")
                else:
                    self._send(404, {"detail": "Not Found"})

            def _batch_api(self, method: str, body: bytes) -> None:
                assert owner.batch_api is not None
                status, answer = owner.batch_api.handle(method, self.path, self.headers, body)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                kind = "application/octet-stream" if isinstance(answer, bytes) else "json"
                self.send_header("Content-Type", kind.replace("json", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                if owner.batch_api is not None and owner.batch_api.handles(self.path):
                    self._batch_api("POST", self.rfile.read(length))
                    return
                request = json.loads(self.rfile.read(length) or b"{}")
                with owner._lock:
                    number = len(owner.requests)
                    owner.requests.append(request)
                    owner.answered_before.append(owner._answers)
                    owner.in_flight += 1
                    owner.most_in_flight = max(owner.most_in_flight, owner.in_flight)
                self._pending = True
                try:
                    self._reply(number, request)
                finally:
                    self._answering()

            def _answering(self) -> None:
                if getattr(self, "_pending", False):
                    self._pending = False
                    with owner._lock:
                        owner.in_flight -= 1
                        owner._answers += 1

            def _reply(self, number: int, request: dict[str, Any]) -> None:
                delay = owner.latency_fn(number) if owner.latency_fn else owner.latency
                if delay:
                    time.sleep(delay)
                if self.path != "/v1/chat/completions":
                    self._send(404, {"detail": "Not Found"})  # as a web framework says it
                    return
                status = owner._failure(number, request)
                if status is not None:
                    with owner._lock:
                        owner.failures += 1
                    if status == 0:
                        self._answering()
                        self.close_connection = True
                        self.connection.shutdown(2)  # a reset, as a crashing proxy does
                        return
                    self._send(status, {"error": {"message": "the server failed"}}, retry=True)
                    return
                model = request.get("model")
                if model not in owner.models:
                    body = {
                        "error": {
                            "message": f"The model `{model}` does not exist",
                            "code": "model_not_found",
                        }
                    }
                    self._send(404, body)
                    return
                self._send(200, owner._answer(request))

        if self.batch_api is not None:
            self.batch_api.server = self
        self._started = time.monotonic()
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _failure(self, number: int, request: dict[str, Any]) -> int | None:
        if self.fail_for is not None:
            if time.monotonic() - self._started < self.fail_for:
                return self.fail_status or 429
            return None
        if self.fail_when is not None:
            return self.fail_when(number, request)
        return self.fail_status

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        messages = request.get("messages", [])
        question = messages[-1].get("content", "") if messages else ""
        if self.answer_fn is not None:
            answer = self.answer_fn(request)
        else:
            answer = self.answers.get(question, self.default_answer)
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": request.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer},
                    "finish_reason": "stop",
                }
            ],
            "usage": self.usage(request) if self.usage else dict(DEFAULT_USAGE),
        }

    def settled(self, quiet: float = 1.5, timeout: float = 30.0) -> int:
        """The number of requests once the server has been quiet (nothing arriving, nothing
        in flight) for `quiet` seconds. A client killed just after sending a request leaves
        it in a socket the server reads later (it accepts every half second), so a count
        taken at once may miss it."""
        deadline = time.monotonic() + timeout
        count, since = -1, time.monotonic()
        while True:
            with self._lock:
                now = len(self.requests) if self.in_flight == 0 else -1
            if now != count or now < 0:
                count, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return count
            if time.monotonic() > deadline:
                raise AssertionError("the server never went quiet")
            time.sleep(0.05)

    def __enter__(self) -> ChatServer:
        return self  # started already: `with ChatServer(...).start() as server:`

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
