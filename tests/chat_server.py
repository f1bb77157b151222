"""A chat-completions server on loopback, for tests and benchmarks.

It answers each request from a table (last user message -> answer), can add a fixed latency,
fail with a chosen HTTP status, and knows a fixed set of model names.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ChatServer:
    answers: dict[str, str] = field(default_factory=dict)
    default_answer: str = "I do not know."
    latency: float = 0.0
    fail_status: int | None = None
    models: tuple[str, ...] = ("test-model",)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/v1"

    def start(self) -> ChatServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = json.loads(self.rfile.read(length) or b"{}")
                owner.requests.append(request)
                if owner.latency:
                    time.sleep(owner.latency)
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "no such route"}})
                    return
                if owner.fail_status is not None:
                    self._send(owner.fail_status, {"error": {"message": "the server failed"}})
                    return
                model = request.get("model")
                if model not in owner.models:
                    self._send(404, {"error": {"message": f"The model `{model}` does not exist"}})
                    return
                users = [m for m in request.get("messages", []) if m.get("role") == "user"]
                question = users[-1]["content"] if users else ""
                answer = owner.answers.get(question, owner.default_answer)
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 0,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
