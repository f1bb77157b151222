"""The Files and Batches endpoints of the OpenAI API, in memory, for a ChatServer: what the
`openai` package calls to upload a JSONL input file (multipart), create a batch on
/v1/chat/completions, retrieve, list and cancel batches, and download the output and
error files. Each batch's lines are answered in a thread of its own, as the chat endpoint
answers (the server's answer function and models), after `delay` seconds.

What can go wrong is set per test: lines that fail (`fail_line` gives a status for a
request's custom_id and body, or None), batches that expire after answering some lines
(`expire_after`), that fail whole (`fail_batches`), or that complete with no output
file (`no_output`)."""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, urlparse

if TYPE_CHECKING:
    from helpers.chat_server import ChatServer

LIVE = ("validating", "in_progress", "finalizing", "cancelling")


@dataclass
class BatchAPI:
    delay: float = 0.2  # seconds before a batch's lines are answered
    fail_line: Callable[[str, dict[str, Any]], int | None] | None = None
    expire_after: int | None = None  # lines a batch answers before it expires
    fail_batches: int = 0  # how many batches (the first ones) fail whole at validation
    no_output: int = 0  # how many batches (the first ones) complete with no files at all
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)  # every custom_id, in every batch
    bodies: list[dict[str, Any]] = field(default_factory=list)  # their requests' bodies
    calls: list[str] = field(default_factory=list)  # "POST /v1/batches", ...
    _ids: Any = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ChatServer | None = None

    def handles(self, path: str) -> bool:
        return path.startswith(("/v1/files", "/v1/batches"))

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        """(status, JSON body, or bytes for a file's content)."""
        url = urlparse(path)
        parts = url.path.rstrip("/").split("/")[2:]  # ["batches", id, "cancel"], ...
        with self._lock:
            self.calls.append(f"{method} /v1/{parts[0]}")
        if parts == ["files"] and method == "POST":
            return self._upload(headers, body)
        if parts[0] == "files" and len(parts) == 3 and parts[2] == "content":
            content = self.files.get(parts[1])
            return (200, content) if content is not None else _missing("file", parts[1])
        if parts == ["batches"] and method == "POST":
            return self._create(json.loads(body))
        if parts == ["batches"] and method == "GET":
            return 200, self._list(parse_qs(url.query))
        if parts[0] == "batches" and len(parts) >= 2:
            with self._lock:
                batch = self.batches.get(parts[1])
                if batch is None:
                    return _missing("batch", parts[1])
                cancel = len(parts) == 3 and parts[2] == "cancel" and method == "POST"
                if cancel and batch["status"] in LIVE:
                    batch["status"] = "cancelling"
                    batch["cancelling_at"] = int(time.time())
                return 200, dict(batch)
        return 404, {"error": {"message": f"no route {method} {url.path}"}}

    def _new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def _upload(self, headers: Any, body: bytes) -> tuple[int, Any]:
        head = f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields: dict[Any, bytes] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[name] = payload if isinstance(payload, bytes) else b""
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return 400, {"error": {"message": "expected purpose=batch and a file"}}
        with self._lock:
            file_id = self._new_id("file")
            self.files[file_id] = fields["file"]
        return 200, _file(file_id, len(fields["file"]), "batch")

    def _create(self, request: dict[str, Any]) -> tuple[int, Any]:
        content = self.files.get(request.get("input_file_id", ""))
        if content is None or request.get("endpoint") != "/v1/chat/completions":
            return 400, {"error": {"message": "bad input_file_id or endpoint"}}
        lines = [json.loads(line) for line in content.splitlines() if line.strip()]
        with self._lock:
            batch_id = self._new_id("batch")
            number = len(self.batches)
            batch = {
                "id": batch_id,
                "object": "batch",
                "endpoint": request["endpoint"],
                "input_file_id": request["input_file_id"],
                "completion_window": request.get("completion_window"),
                "status": "validating",
                "created_at": int(time.time()),
                "metadata": request.get("metadata"),
                "output_file_id": None,
                "error_file_id": None,
                "errors": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            }
            self.batches[batch_id] = batch
            self.submitted.extend(line["custom_id"] for line in lines)
            self.bodies.extend(line["body"] for line in lines)
        threading.Thread(target=self._work, args=(batch_id, lines, number), daemon=True).start()
        return 200, dict(batch)

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = int(query.get("limit", ["20"])[0])
        after = query.get("after", [None])[0]
        with self._lock:
            newest_first = [dict(b) for b in reversed(self.batches.values())]
        if after is not None:
            ids = [b["id"] for b in newest_first]
            newest_first = newest_first[ids.index(after) + 1 :] if after in ids else []
        page = newest_first[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(newest_first) > limit,
        }

    def _set(self, batch_id: str, **values: Any) -> dict[str, Any]:
        with self._lock:
            self.batches[batch_id].update(values)
            return self.batches[batch_id]

    def _work(self, batch_id: str, lines: list[dict[str, Any]], number: int) -> None:
        assert self.server is not None
        if number < self.fail_batches:
            error = {"code": "invalid_request", "message": "the input is not valid", "line": 1}
            self._set(batch_id, status="failed", errors={"object": "list", "data": [error]})
            return
        self._set(batch_id, status="in_progress", in_progress_at=int(time.time()))
        until = time.monotonic() + self.delay
        while time.monotonic() < until and self.batches[batch_id]["status"] != "cancelling":
            time.sleep(0.05)  # a cancelled batch ends soon, as the API's do
        out, errors = [], []
        ended = "completed"
        for i, line in enumerate(lines):
            if self.batches[batch_id]["status"] == "cancelling":
                ended = "cancelled"
            if self.expire_after is not None and i >= self.expire_after:
                ended = "expired"
            if ended != "completed":
                code = "batch_expired" if ended == "expired" else "batch_cancelled"
                errors.append(_line(line, None, {"code": code, "message": f"batch {ended}"}))
                continue
            status = self.fail_line(line["custom_id"], line["body"]) if self.fail_line else None
            if status is not None:
                body = {"error": {"message": "the request failed", "type": "server_error"}}
                errors.append(_line(line, {"status_code": status, "body": body}, None))
                continue
            answer = self.server._answer(line["body"])
            out.append(_line(line, {"status_code": 200, "body": answer}, None))
        with self._lock:
            self.batches[batch_id]["request_counts"] = {
                "total": len(lines),
                "completed": len(out),
                "failed": len(errors),
            }
            if number < self.no_output:
                out, errors = [], []
            files = {}
            for name, rows in (("output_file_id", out), ("error_file_id", errors)):
                if rows:
                    file_id = self._new_id("file")
                    self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                    files[name] = file_id
        self._set(batch_id, status="finalizing")
        self._set(batch_id, status=ended, **files, **{f"{ended}_at": int(time.time())})


def _line(line: dict[str, Any], response: Any, error: Any) -> dict[str, Any]:
    if response is not None:
        response = {"request_id": "req-" + line["custom_id"][:8], **response}
    return {"id": "batch_req_" + line["custom_id"][:8], "custom_id": line["custom_id"],
            "response": response, "error": error}  # fmt: skip


def _file(file_id: str, size: int, purpose: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": "input.jsonl",
        "purpose": purpose,
        "status": "processed",
    }


def _missing(kind: str, name: str) -> tuple[int, Any]:
    return 404, {"error": {"message": f"No such {kind}: {name}", "type": "invalid_request_error"}}
